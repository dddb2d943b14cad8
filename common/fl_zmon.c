/* fl_zmon: see fl_zmon.h. */
#include "fl_zmon.h"

#include <string.h>
#include <zmq.h>

int fl_zmon_recv(void *mon, uint16_t *event, uint32_t *value) {
  zmq_msg_t f1, f2;
  zmq_msg_init(&f1);
  if (zmq_msg_recv(&f1, mon, ZMQ_DONTWAIT) < 0) {
    zmq_msg_close(&f1);
    return 0;
  }
  *event = 0;
  *value = 0;
  if (zmq_msg_size(&f1) >= 6) {
    memcpy(event, zmq_msg_data(&f1), 2);
    memcpy(value, (const uint8_t *)zmq_msg_data(&f1) + 2, 4);
  }
  zmq_msg_init(&f2);
  int more = zmq_msg_more(&f1);
  while (more && zmq_msg_recv(&f2, mon, ZMQ_DONTWAIT) >= 0)
    more = zmq_msg_more(&f2); /* the endpoint (and anything a later libzmq adds) */
  zmq_msg_close(&f1);
  zmq_msg_close(&f2);
  return 1;
}
