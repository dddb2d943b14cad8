/* fl_conns: the coordinator's table of open connections, by file descriptor.
 *
 * libzmq owns the TCP (or IPC) connections behind a ROUTER socket and tells
 * about them only through its socket monitor (ACCEPTED, DISCONNECTED, with
 * the fd) and, per message, ZMQ_SRCFD. This table joins the two: which
 * connection is open, since when, from which address, whether it carries a
 * joined client. It lets the coordinator bound what a peer can hold open:
 * connections that never join within a bound are closed, and so is every
 * connection beyond a maximum, before the process's open-file limit can
 * bite.
 *
 * Closing is shutdown(2) of libzmq's descriptor, never close(2): libzmq sees
 * the end of the stream, closes the fd itself and reports DISCONNECTED. An fd
 * number may be reused by a later connection before its DISCONNECTED is read,
 * so each entry keeps the socket's inode (fstat) and a shutdown happens only
 * if the fd still refers to the same socket.
 *
 * Plain data and no I/O beyond getpeername/fstat/shutdown on the given fds;
 * not thread-safe. */
#ifndef FL_CONNS_H
#define FL_CONNS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FL_CONNS_ADDR_MAX 64
#define FL_CONNS_MAX_FD (1 << 20)

typedef struct {
  int open;                     /* accepted and not yet disconnected */
  int closing;                  /* we shut it down; its DISCONNECTED is pending */
  char addr[FL_CONNS_ADDR_MAX]; /* "1.2.3.4:5678", "[::1]:5678", "ipc" or "" */
  double since;                 /* accepted, or last unbound from a client (monotonic s) */
  ino_t ino;                    /* the socket's inode, tells this connection from a later one */
  int64_t client;               /* engine id of the client it carries, -1 = none */
  uint64_t messages;            /* messages received on it */
} fl_conn_t;

typedef struct fl_conns fl_conns_t;

fl_conns_t *fl_conns_new(void);
void fl_conns_destroy(fl_conns_t **t);

/* A connection was accepted on fd at `now`: records its peer address and
 * inode (read now: the fd may be gone later). Returns the entry, or NULL if
 * fd is out of range or memory is short (the connection is then untracked:
 * the caller should close it). */
fl_conn_t *fl_conns_accepted(fl_conns_t *t, int fd, double now);

/* The connection on fd is gone (DISCONNECTED). Returns the entry as it was
 * (valid until the next call), or NULL if it was not tracked. */
const fl_conn_t *fl_conns_closed(fl_conns_t *t, int fd);

/* The open entry of fd, or NULL. */
fl_conn_t *fl_conns_get(fl_conns_t *t, int fd);

/* Connections open now (accepted, not disconnected, closing ones included). */
size_t fl_conns_open(const fl_conns_t *t);

/* Shuts the connection on fd down if it is still the one tracked (same
 * inode): 0 done, -1 if it is gone or another socket by now. */
int fl_conns_shutdown(fl_conns_t *t, int fd);

/* Iterates the open entries without a client whose `since` is older than
 * now - timeout and which are not closing: call with *fd = -1 first; returns
 * 1 and sets *fd for each, 0 at the end. */
int fl_conns_next_idle(const fl_conns_t *t, double now, double timeout, int *fd);

#endif
