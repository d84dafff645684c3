#define _GNU_SOURCE
#include "cvigil_http.h"

#include <dlfcn.h>
#include <stdio.h>
#include <strings.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The few libcurl entry points and option numbers used (stable ABI of libcurl 7/8; the
 * headers are not installed here, so they are declared by value). */
typedef void CURL;
struct curl_slist;
typedef int CURLcode;
typedef long long curl_off_t;
typedef int curl_socket_t;
struct curl_sockaddr { int family; int socktype; int protocol; unsigned int addrlen; struct sockaddr addr; };

enum {
    OPT_WRITEDATA = 10001, OPT_URL = 10002, OPT_ERRORBUFFER = 10010, OPT_POSTFIELDS = 10015,
    OPT_HTTPHEADER = 10023, OPT_CUSTOMREQUEST = 10036, OPT_XFERINFODATA = 10057,
    OPT_OPENSOCKETDATA = 10164, OPT_CLOSESOCKETDATA = 10209,
    OPT_WRITEFUNCTION = 20011, OPT_HEADERFUNCTION = 20079, OPT_OPENSOCKETFUNCTION = 20163,
    OPT_CLOSESOCKETFUNCTION = 20208, OPT_XFERINFOFUNCTION = 20219,
    OPT_HEADERDATA = 10029,
    OPT_NOPROGRESS = 43, OPT_NOSIGNAL = 99, OPT_TIMEOUT_MS = 155, OPT_HTTPGET = 80,
    OPT_PROTOCOLS = 181, OPT_POSTFIELDSIZE_LARGE = 30120,
};
#define INFO_RESPONSE_CODE 0x200002
#define CURL_GLOBAL_ALL 3
#define PROTO_HTTP_HTTPS 3

static struct {
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *, int, ...);
    CURLcode (*easy_perform)(CURL *);
    CURLcode (*easy_getinfo)(CURL *, int, ...);
    void (*easy_cleanup)(CURL *);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
    CURLcode (*global_init)(long);
    const char *(*easy_strerror)(CURLcode);
} curl;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static int loaded = 0;
static char load_error[256];

static void load(void) {
    void *h = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libcurl.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) { snprintf(load_error, sizeof load_error, "cannot load libcurl: %s", dlerror()); return; }
#define SYM(field, name) if (!(*(void **)&curl.field = dlsym(h, name))) { snprintf(load_error, sizeof load_error, "libcurl has no %s", name); return; }
    SYM(easy_init, "curl_easy_init") SYM(easy_setopt, "curl_easy_setopt") SYM(easy_perform, "curl_easy_perform")
    SYM(easy_getinfo, "curl_easy_getinfo") SYM(easy_cleanup, "curl_easy_cleanup") SYM(slist_append, "curl_slist_append")
    SYM(slist_free_all, "curl_slist_free_all") SYM(global_init, "curl_global_init") SYM(easy_strerror, "curl_easy_strerror")
#undef SYM
    if (curl.global_init(CURL_GLOBAL_ALL) != 0) { snprintf(load_error, sizeof load_error, "curl_global_init failed"); return; }
    loaded = 1;
}

const char *cvigil_http_load_error(void) { return load_error; }

struct cvigil_http_call {
    pthread_mutex_t lock;
    int cancelled;       /* under lock */
    int socket;          /* the transfer's socket, -1 when none; under lock */
    char *body;
    size_t length, capacity, limit;
    int over;
    char error[256];
};

cvigil_http_call *cvigil_http_new(void) {
    pthread_once(&load_once, load);
    if (!loaded) return NULL;
    cvigil_http_call *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    pthread_mutex_init(&c->lock, NULL);
    c->socket = -1;
    return c;
}

void cvigil_http_free(cvigil_http_call *c) {
    if (!c) return;
    pthread_mutex_destroy(&c->lock);
    free(c->body);
    free(c);
}

void cvigil_http_cancel(cvigil_http_call *c) {
    pthread_mutex_lock(&c->lock);
    c->cancelled = 1;
    if (c->socket >= 0) shutdown(c->socket, SHUT_RDWR);
    pthread_mutex_unlock(&c->lock);
}

static size_t on_body(char *data, size_t size, size_t count, void *user) {
    cvigil_http_call *c = user;
    size_t n = size * count;
    if (c->over || n > c->limit - c->length) { c->over = 1; return 0; } /* 0 stops the transfer */
    if (c->length + n > c->capacity) {
        size_t want = c->capacity ? c->capacity * 2 : 16384;
        while (want < c->length + n) want *= 2;
        if (want > c->limit) want = c->limit;
        char *p = realloc(c->body, want ? want : 1);
        if (!p) return 0;
        c->body = p;
        c->capacity = want;
    }
    memcpy(c->body + c->length, data, n);
    c->length += n;
    return n;
}

/* A declared Content-Length over the cap stops the transfer before the body. */
static size_t on_header(char *data, size_t size, size_t count, void *user) {
    cvigil_http_call *c = user;
    size_t n = size * count;
    static const char name[] = "content-length:";
    if (n > sizeof name - 1 && strncasecmp(data, name, sizeof name - 1) == 0) {
        char text[32];
        size_t len = n - (sizeof name - 1);
        if (len >= sizeof text) len = sizeof text - 1;
        memcpy(text, data + sizeof name - 1, len);
        text[len] = 0;
        char *end = NULL;
        unsigned long long declared = strtoull(text, &end, 10);
        if (end != text && declared > c->limit) { c->over = 1; return 0; }
    }
    return n;
}

static int on_progress(void *user, curl_off_t a, curl_off_t b, curl_off_t d, curl_off_t e) {
    (void)a; (void)b; (void)d; (void)e;
    cvigil_http_call *c = user;
    pthread_mutex_lock(&c->lock);
    int stop = c->cancelled;
    pthread_mutex_unlock(&c->lock);
    return stop;
}

static curl_socket_t on_open(void *user, int purpose, struct curl_sockaddr *a) {
    (void)purpose;
    cvigil_http_call *c = user;
    pthread_mutex_lock(&c->lock);
    int fd = c->cancelled ? -1 : socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd >= 0) c->socket = fd;
    pthread_mutex_unlock(&c->lock);
    return fd;
}

static int on_close(void *user, curl_socket_t fd) {
    cvigil_http_call *c = user;
    pthread_mutex_lock(&c->lock);
    if (c->socket == fd) c->socket = -1;
    int r = close(fd);
    pthread_mutex_unlock(&c->lock);
    return r;
}

int cvigil_http_perform(cvigil_http_call *c, const char *method, const char *url,
                        const char *const *headers, int count, const void *body, size_t body_length,
                        long timeout_ms, size_t max_body, long *status, int *over, int *cancelled) {
    *status = 0; *over = 0; *cancelled = 0;
    c->length = 0; c->over = 0; c->limit = max_body; c->error[0] = 0;
    pthread_mutex_lock(&c->lock);
    int was = c->cancelled;
    pthread_mutex_unlock(&c->lock);
    if (was) { *cancelled = 1; return 42; }
    CURL *h = curl.easy_init();
    if (!h) { snprintf(c->error, sizeof c->error, "curl_easy_init failed"); return 2; }
    struct curl_slist *list = NULL;
    for (int i = 0; i < count; i++) list = curl.slist_append(list, headers[i]);
    list = curl.slist_append(list, "Expect:"); /* no 100-continue round trip */
    curl.easy_setopt(h, OPT_URL, url);
    curl.easy_setopt(h, OPT_PROTOCOLS, (long)PROTO_HTTP_HTTPS);
    curl.easy_setopt(h, OPT_NOSIGNAL, 1L);
    curl.easy_setopt(h, OPT_TIMEOUT_MS, timeout_ms);
    curl.easy_setopt(h, OPT_HTTPHEADER, list);
    curl.easy_setopt(h, OPT_ERRORBUFFER, c->error);
    curl.easy_setopt(h, OPT_WRITEFUNCTION, on_body);
    curl.easy_setopt(h, OPT_WRITEDATA, c);
    curl.easy_setopt(h, OPT_HEADERFUNCTION, on_header);
    curl.easy_setopt(h, OPT_HEADERDATA, c);
    curl.easy_setopt(h, OPT_NOPROGRESS, 0L);
    curl.easy_setopt(h, OPT_XFERINFOFUNCTION, on_progress);
    curl.easy_setopt(h, OPT_XFERINFODATA, c);
    curl.easy_setopt(h, OPT_OPENSOCKETFUNCTION, on_open);
    curl.easy_setopt(h, OPT_OPENSOCKETDATA, c);
    curl.easy_setopt(h, OPT_CLOSESOCKETFUNCTION, on_close);
    curl.easy_setopt(h, OPT_CLOSESOCKETDATA, c);
    if (body) {
        curl.easy_setopt(h, OPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_length);
        curl.easy_setopt(h, OPT_POSTFIELDS, body);
    }
    if (strcmp(method, "GET") == 0 && !body) curl.easy_setopt(h, OPT_HTTPGET, 1L);
    else if (strcmp(method, "POST") != 0) curl.easy_setopt(h, OPT_CUSTOMREQUEST, method);
    CURLcode rc = curl.easy_perform(h);
    curl.easy_getinfo(h, INFO_RESPONSE_CODE, status);
    if (rc != 0 && c->error[0] == 0) snprintf(c->error, sizeof c->error, "%s", curl.easy_strerror(rc));
    curl.easy_cleanup(h);
    curl.slist_free_all(list);
    *over = c->over;
    pthread_mutex_lock(&c->lock);
    *cancelled = c->cancelled;
    pthread_mutex_unlock(&c->lock);
    return rc;
}

const void *cvigil_http_body(cvigil_http_call *c, size_t *length) {
    *length = c->length;
    return c->body;
}

const char *cvigil_http_error(cvigil_http_call *c) { return c->error; }
