/* fl_conns: see fl_conns.h. */
#include "fl_conns.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

struct fl_conns {
  fl_conn_t *by_fd; /* (cap) indexed by fd */
  size_t cap, open;
};

fl_conns_t *fl_conns_new(void) {
  return calloc(1, sizeof(fl_conns_t));
}

void fl_conns_destroy(fl_conns_t **pt) {
  if (!pt || !*pt) return;
  free((*pt)->by_fd);
  free(*pt);
  *pt = NULL;
}

static int grow(fl_conns_t *t, size_t need) {
  if (need <= t->cap) return 0;
  size_t cap = t->cap ? t->cap : 256;
  while (cap < need)
    cap *= 2;
  fl_conn_t *p = realloc(t->by_fd, cap * sizeof *p);
  if (!p) return -1;
  memset(p + t->cap, 0, (cap - t->cap) * sizeof *p);
  t->by_fd = p;
  t->cap = cap;
  return 0;
}

static void peer_addr(int fd, char *out, size_t cap) {
  struct sockaddr_storage sa;
  socklen_t len = sizeof sa;
  char host[INET6_ADDRSTRLEN] = "";
  out[0] = '\0';
  if (getpeername(fd, (struct sockaddr *)&sa, &len) != 0) return;
  if (sa.ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)&sa;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    snprintf(out, cap, "%s:%u", host, ntohs(in->sin_port));
  } else if (sa.ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    snprintf(out, cap, "[%s]:%u", host, ntohs(in6->sin6_port));
  } else if (sa.ss_family == AF_UNIX) {
    snprintf(out, cap, "ipc");
  }
}

static ino_t fd_inode(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

fl_conn_t *fl_conns_accepted(fl_conns_t *t, int fd, double now) {
  if (fd < 0 || fd >= FL_CONNS_MAX_FD || grow(t, (size_t)fd + 1) != 0) return NULL;
  fl_conn_t *c = &t->by_fd[fd];
  if (!c->open) t->open++;
  memset(c, 0, sizeof *c);
  c->open = 1;
  c->since = now;
  c->client = -1;
  c->ino = fd_inode(fd);
  peer_addr(fd, c->addr, sizeof c->addr);
  return c;
}

const fl_conn_t *fl_conns_closed(fl_conns_t *t, int fd) {
  if (fd < 0 || (size_t)fd >= t->cap || !t->by_fd[fd].open) return NULL;
  fl_conn_t *c = &t->by_fd[fd];
  c->open = 0;
  t->open--;
  return c;
}

fl_conn_t *fl_conns_get(fl_conns_t *t, int fd) {
  if (fd < 0 || (size_t)fd >= t->cap || !t->by_fd[fd].open) return NULL;
  return &t->by_fd[fd];
}

size_t fl_conns_open(const fl_conns_t *t) {
  return t->open;
}

int fl_conns_shutdown(fl_conns_t *t, int fd) {
  fl_conn_t *c = fl_conns_get(t, fd);
  if (!c || c->closing || !c->ino || fd_inode(fd) != c->ino) return -1;
  if (shutdown(fd, SHUT_RDWR) != 0) return -1;
  c->closing = 1;
  return 0;
}

int fl_conns_next_idle(const fl_conns_t *t, double now, double timeout, int *fd) {
  for (size_t i = (size_t)(*fd + 1); i < t->cap; i++) {
    const fl_conn_t *c = &t->by_fd[i];
    if (c->open && !c->closing && c->client < 0 && now - c->since >= timeout) {
      *fd = (int)i;
      return 1;
    }
  }
  return 0;
}
