/* fl_zmon: reading ZeroMQ socket-monitor events (zmq_socket_monitor()).
 *
 * An event is two frames: 6 bytes (uint16 event id, uint32 value, host
 * byte order) and the endpoint. The value is an fd for ACCEPTED and
 * DISCONNECTED, a ZMQ_PROTOCOL_ERROR_* code for HANDSHAKE_FAILED_PROTOCOL,
 * the ZAP status for HANDSHAKE_FAILED_AUTH, an errno otherwise. */
#ifndef FL_ZMON_H
#define FL_ZMON_H

#include <stdint.h>

/* Reads one event from the monitor's PAIR socket without blocking, and
 * drops the endpoint frame (and any later ones). Returns 1 with *event and
 * *value set, 0 if none is queued (or on error). */
int fl_zmon_recv(void *mon, uint16_t *event, uint32_t *value);

#endif
