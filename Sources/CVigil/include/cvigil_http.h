#ifndef CVIGIL_HTTP_H
#define CVIGIL_HTTP_H

#include <stddef.h>

/// One HTTP call through the system's libcurl (libcurl.so.4, loaded with dlopen: FoundationNetworking
/// links it already), with a hard cap on the body kept: the write callback stops the transfer at
/// once when the body would pass `max_body` (docs/chat.md, "Reply size caps").
typedef struct cvigil_http_call cvigil_http_call;

/// A new call, or NULL when libcurl cannot be loaded (then `cvigil_http_error` says why).
cvigil_http_call *cvigil_http_new(void);

/// Ends the transfer in flight at once (its socket is shut down) and every later `perform`.
/// Safe from any thread while `perform` runs on another.
void cvigil_http_cancel(cvigil_http_call *call);

/// Runs the request. `headers`: `count` strings "Name: value". `body` may be NULL.
/// Returns the CURLcode (0 when a response came). Out: `status` (HTTP status, 0 if none),
/// `over` (1 when the body passed `max_body`, by Content-Length or counted), `cancelled`.
/// The body kept is in `cvigil_http_body`.
int cvigil_http_perform(cvigil_http_call *call, const char *method, const char *url,
                        const char *const *headers, int count, const void *body, size_t body_length,
                        long timeout_ms, size_t max_body, long *status, int *over, int *cancelled);

/// The body kept by the last `perform` (valid until the next call or `free`).
const void *cvigil_http_body(cvigil_http_call *call, size_t *length);

/// libcurl's message for the last failure (or the loader's), never the URL.
const char *cvigil_http_error(cvigil_http_call *call);

void cvigil_http_free(cvigil_http_call *call);

/// Why libcurl could not be loaded (when `cvigil_http_new` returned NULL).
const char *cvigil_http_load_error(void);

#endif
