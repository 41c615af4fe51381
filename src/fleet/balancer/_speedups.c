/* fleet.balancer._speedups: the common request head and the cached response head in C.
 *
 * Optional. ``balancer.head`` uses it when it was built and FLEET_PURE_PYTHON is not 1;
 * otherwise the pure-Python functions there do the same work. Both functions here handle only
 * the common case and DECLINE (return None) on anything else, so the rules stay written once,
 * in Python: the caller then runs ``head.forward_request`` / ``head.response_head_raw``, which
 * also raises every HeadError. A hypothesis test checks that a head the C code accepts comes
 * out byte for byte as the Python code builds it (tests/test_speedups.py).
 *
 * request_head: an origin-form request without body, Upgrade or Transfer-Encoding, from a
 * peer that is not a --trusted-proxy (the caller checks that once per connection), whose Host
 * is already in head._VALID_HOSTS as valid, and whose Connection names only keep-alive/close.
 *
 * response_head: a worker head already in head._PLAIN_HEADS (the Python code fills it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

/* Header kinds: the same numbers as request_rules.py's _HOP.._IF_MODIFIED_SINCE (checked by
 * head.py at import against KIND_NAMES), plus the codes of the name cache below. */
enum {
    K_HOP, K_CONNECTION, K_UPGRADE, K_TRANSFER_ENCODING, K_FORWARDING, K_HOST, K_CONTENT_LENGTH,
    K_COOKIE, K_ORIGIN, K_CLAIM, K_WS_PROTOCOL, K_SESSION_ID, K_IF_NONE_MATCH, K_IF_MODIFIED_SINCE,
    K_ACCEPT_ENCODING, K_RANGE, K_IF_RANGE, K_COUNT,
    K_PLAIN = 100,       /* forwarded as it is */
    K_XFORWARDED = 101,  /* another X-Forwarded-*: a client's claim, dropped */
    K_DECLINE = 102,     /* a name this code does not handle ("close"): the Python path */
};
#define MAX_FIELDS 256
#define NAME_CACHE_MAX 512
#define NAME_CACHE_NAME_MAX 64

static PyObject *request_type;   /* head.Request */
static PyObject *special;        /* head._REQUEST_SPECIAL: lowercase name -> kind */
static PyObject *valid_hosts;    /* head._VALID_HOSTS: Host value -> bool */
static PyObject *plain_heads;    /* head._PLAIN_HEADS: worker head -> (bytes, has length) */
static PyObject *name_kinds;     /* header name as sent -> kind code (bounded) */

/* Where each of Request's __slots__ lives in its instances (from the member descriptors, at
 * configure): the fields are stored there directly, as the descriptors' __set__ would. */
enum {
    F_METHOD, F_PATH, F_HOST, F_AFFINITY_COOKIE, F_ORIGIN, F_CONTENT_LENGTH, F_CHUNKED, F_WEBSOCKET,
    F_FORWARD, F_KEEP_ALIVE, F_HTTP10, F_CLIENT, F_QUERY, F_BOKEH_PROTOCOL, F_BOKEH_SESSION,
    F_IF_NONE_MATCH, F_IF_MODIFIED_SINCE, F_ACCEPT_ENCODING, F_RANGE, F_IF_RANGE, F_COUNT,
};
static const char *field_names[F_COUNT] = {
    "method", "path", "host", "affinity_cookie", "origin", "content_length", "chunked", "websocket",
    "forward", "keep_alive", "http10", "client", "query", "bokeh_protocol", "bokeh_session",
    "if_none_match", "if_modified_since", "accept_encoding", "range", "if_range",
};
static Py_ssize_t field_offsets[F_COUNT];

static PyObject *empty_bytes;

/* The kind of a header name, cached by the name as the client sent it (a client sends the same
 * names on every request); -1 with an exception set on error. */
static int
name_kind(PyObject *name)
{
    PyObject *cached = PyDict_GetItemWithError(name_kinds, name);
    if (cached != NULL)
        return (int)PyLong_AsLong(cached);
    if (PyErr_Occurred())
        return -1;
    Py_ssize_t size = PyBytes_GET_SIZE(name);
    const char *text = PyBytes_AS_STRING(name);
    PyObject *lower = PyBytes_FromStringAndSize(NULL, size);
    if (lower == NULL)
        return -1;
    char *out = PyBytes_AS_STRING(lower);
    for (Py_ssize_t i = 0; i < size; i++) {
        char c = text[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    int kind;
    PyObject *found = PyDict_GetItemWithError(special, lower);
    if (found != NULL) {
        kind = (int)PyLong_AsLong(found);
    } else if (PyErr_Occurred()) {
        Py_DECREF(lower);
        return -1;
    } else if (size >= 12 && memcmp(out, "x-forwarded-", 12) == 0) {
        kind = K_XFORWARDED;
    } else if (size == 5 && memcmp(out, "close", 5) == 0) {
        kind = K_DECLINE;  /* dropped if Connection names it: left to the Python code */
    } else {
        kind = K_PLAIN;
    }
    Py_DECREF(lower);
    if (size <= NAME_CACHE_NAME_MAX && PyDict_GET_SIZE(name_kinds) < NAME_CACHE_MAX) {
        PyObject *value = PyLong_FromLong(kind);
        if (value == NULL || PyDict_SetItem(name_kinds, name, value) < 0) {
            Py_XDECREF(value);
            return -1;
        }
        Py_DECREF(value);
    }
    return kind;
}

static int
is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c';
}

/* Whether a Connection value names only keep-alive and close (any case, any spacing). */
static int
plain_connection(PyObject *value)
{
    const char *text = PyBytes_AS_STRING(value);
    Py_ssize_t size = PyBytes_GET_SIZE(value), start = 0;
    while (start <= size) {
        Py_ssize_t end = start;
        while (end < size && text[end] != ',')
            end++;
        Py_ssize_t a = start, b = end;
        while (a < b && is_space(text[a]))
            a++;
        while (b > a && is_space(text[b - 1]))
            b--;
        Py_ssize_t n = b - a;
        if (n == 10 && PyOS_strnicmp(text + a, "keep-alive", 10) == 0) {
        } else if (n == 5 && PyOS_strnicmp(text + a, "close", 5) == 0) {
        } else if (n != 0) {
            return 0;
        }
        start = end + 1;
    }
    return 1;
}

/* bytes.strip() of a Host value: a new reference (the same object when nothing is stripped). */
static PyObject *
strip_bytes(PyObject *value)
{
    const char *text = PyBytes_AS_STRING(value);
    Py_ssize_t a = 0, b = PyBytes_GET_SIZE(value);
    while (a < b && is_space(text[a]))
        a++;
    while (b > a && is_space(text[b - 1]))
        b--;
    if (a == 0 && b == PyBytes_GET_SIZE(value)) {
        Py_INCREF(value);
        return value;
    }
    return PyBytes_FromStringAndSize(text + a, b - a);
}

/* Heads are made in two passes of the same emitter: one with ``at`` NULL counts the bytes,
 * one writes them into a bytes object of that size. No length is derived by hand. */
typedef struct {
    char *at;
    Py_ssize_t size;
} Out;

static inline void
put(Out *out, const char *src, Py_ssize_t n)
{
    if (out->at != NULL) {
        memcpy(out->at, src, n);
        out->at += n;
    }
    out->size += n;
}
#define PUT_LIT(out, lit) put((out), (lit), sizeof(lit) - 1)
#define PUT_BYTES(out, obj) put((out), PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj))

/* The bytes ``emit`` puts, in a new bytes object; NULL with an exception set on error. */
#define EMIT_BYTES(result, emit_call)                                                     \
    do {                                                                                  \
        Out out = {NULL, 0};                                                              \
        Out *o = &out;                                                                    \
        emit_call;                                                                        \
        Py_ssize_t measured = out.size;                                                   \
        result = PyBytes_FromStringAndSize(NULL, measured);                               \
        if (result != NULL) {                                                             \
            out.at = PyBytes_AS_STRING(result);                                           \
            out.size = 0;                                                                 \
            emit_call;                                                                    \
            assert(out.size == measured);                                                 \
        }                                                                                 \
    } while (0)

/* The forwarded request head: request line, the kept fields, Host if it was defaulted, and
 * fleet's forwarding fields (as head.forward_request builds it for an untrusted peer). */
static void
emit_request(Out *o, PyObject *method, PyObject *url, PyObject *headers, const unsigned char *kinds,
             Py_ssize_t count, PyObject *default_host, PyObject *host, PyObject *client_ip, PyObject *scheme)
{
    PUT_BYTES(o, method);
    PUT_LIT(o, " ");
    PUT_BYTES(o, url);
    PUT_LIT(o, " HTTP/1.1");
    for (Py_ssize_t i = 0; i < count; i++) {
        if (!kinds[i])
            continue;
        PyObject *field = PyList_GET_ITEM(headers, i);
        PUT_LIT(o, "\r\n");
        PUT_BYTES(o, PyTuple_GET_ITEM(field, 0));
        PUT_LIT(o, ": ");
        PUT_BYTES(o, PyTuple_GET_ITEM(field, 1));
    }
    if (host == default_host) {
        PUT_LIT(o, "\r\nHost: ");
        PUT_BYTES(o, host);
    }
    PUT_LIT(o, "\r\nX-Forwarded-For: ");
    PUT_BYTES(o, client_ip);
    PUT_LIT(o, "\r\nX-Forwarded-Proto: ");
    PUT_BYTES(o, scheme);
    PUT_LIT(o, "\r\nX-Forwarded-Host: ");
    PUT_BYTES(o, host);
    PUT_LIT(o, "\r\nX-Real-IP: ");
    PUT_BYTES(o, client_ip);
    PUT_LIT(o, "\r\n\r\n");
}

/* A cached worker head with the proxy's edits (as head.response_head_raw adds them). */
static void
emit_response(Out *o, PyObject *raw, int chunked, PyObject *set_cookie, PyObject *extra, int keep_alive,
              int http10)
{
    PUT_BYTES(o, raw);
    PUT_LIT(o, "\r\n");
    if (chunked)
        PUT_LIT(o, "Transfer-Encoding: chunked\r\n");
    if (set_cookie != Py_None) {
        PUT_BYTES(o, set_cookie);
        PUT_LIT(o, "\r\n");
    }
    if (extra != Py_None) {
        PUT_BYTES(o, extra);
        PUT_LIT(o, "\r\n");
    }
    if (!keep_alive)
        PUT_LIT(o, "Connection: close\r\n\r\n");
    else if (http10)
        PUT_LIT(o, "Connection: keep-alive\r\n\r\n");
    else
        PUT_LIT(o, "\r\n");
}

/* request_head(method, url, http10, keep_alive, headers, client_ip, scheme, default_host)
 * -> head.Request, or None to let head.forward_request decide. */
static PyObject *
request_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "request_head takes 8 arguments");
        return NULL;
    }
    PyObject *method = args[0], *url = args[1], *headers = args[4], *client_ip = args[5],
             *scheme = args[6], *default_host = args[7];
    int http10 = PyObject_IsTrue(args[2]);
    int keep_alive = PyObject_IsTrue(args[3]);
    if (http10 < 0 || keep_alive < 0)
        return NULL;
    if (!PyBytes_CheckExact(method) || !PyBytes_CheckExact(url) || !PyList_CheckExact(headers)
        || !PyBytes_CheckExact(client_ip) || !PyBytes_CheckExact(scheme) || !PyBytes_CheckExact(default_host))
        Py_RETURN_NONE;
    Py_ssize_t url_size = PyBytes_GET_SIZE(url);
    if (url_size == 0 || PyBytes_AS_STRING(url)[0] != '/')
        Py_RETURN_NONE;  /* absolute form, "*", malformed */
    if (PyBytes_GET_SIZE(method) == 7 && memcmp(PyBytes_AS_STRING(method), "CONNECT", 7) == 0)
        Py_RETURN_NONE;
    Py_ssize_t count = PyList_GET_SIZE(headers);
    if (count > MAX_FIELDS)
        Py_RETURN_NONE;

    unsigned char kinds[MAX_FIELDS];
    PyObject *host = NULL, *cookie = NULL, *origin = NULL, *ws_protocol = NULL, *session = NULL,
             *if_none_match = NULL, *if_modified_since = NULL, *accept_encoding = NULL, *range = NULL,
             *if_range = NULL;  /* borrowed, except host */
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *field = PyList_GET_ITEM(headers, i);
        if (!PyTuple_CheckExact(field) || PyTuple_GET_SIZE(field) != 2)
            goto decline;
        PyObject *name = PyTuple_GET_ITEM(field, 0), *value = PyTuple_GET_ITEM(field, 1);
        if (!PyBytes_CheckExact(name) || !PyBytes_CheckExact(value))
            goto decline;
        int kind = name_kind(name);
        if (kind < 0)
            goto error;
        switch (kind) {
        case K_HOP: case K_FORWARDING: case K_CLAIM: case K_XFORWARDED:
            kinds[i] = 0;  /* dropped (the peer is not a trusted proxy) */
            continue;
        case K_CONNECTION:
            if (!plain_connection(value))
                goto decline;
            kinds[i] = 0;
            continue;
        case K_HOST: {
            if (host != NULL)
                goto decline;  /* two Host fields: 400, from the Python code */
            host = strip_bytes(value);
            if (host == NULL)
                goto error;
            PyObject *known = PyDict_GetItemWithError(valid_hosts, host);
            if (known != Py_True) {
                if (known == NULL && PyErr_Occurred())
                    goto error;
                goto decline;  /* not checked yet, or invalid */
            }
            break;
        }
        case K_COOKIE:
            if (cookie != NULL)
                goto decline;  /* several Cookie fields are joined by the Python code */
            cookie = value;
            break;
        case K_ORIGIN: origin = value; break;
        case K_WS_PROTOCOL: ws_protocol = value; break;
        case K_SESSION_ID: session = value; break;
        case K_IF_NONE_MATCH: if_none_match = value; break;
        case K_IF_MODIFIED_SINCE: if_modified_since = value; break;
        case K_ACCEPT_ENCODING: accept_encoding = value; break;
        case K_RANGE: range = value; break;
        case K_IF_RANGE: if_range = value; break;
        case K_PLAIN: break;
        default:  /* Upgrade, Transfer-Encoding, Content-Length, "close", unknown */
            goto decline;
        }
        kinds[i] = 1;
    }
    if (host == NULL) {
        if (!http10)
            goto decline;  /* HTTP/1.1 without Host: 400, from the Python code */
        host = default_host;
        Py_INCREF(host);
    }
    PyObject *forward;
    EMIT_BYTES(forward, emit_request(o, method, url, headers, kinds, count, default_host, host, client_ip, scheme));
    if (forward == NULL)
        goto error;

    PyTypeObject *type = (PyTypeObject *)request_type;
    PyObject *request = type->tp_alloc(type, 0);
    if (request == NULL) {
        Py_DECREF(forward);
        goto error;
    }
    const char *question = memchr(PyBytes_AS_STRING(url), '?', url_size);
    PyObject *path, *query;
    if (question == NULL) {
        path = url;
        Py_INCREF(path);
        query = empty_bytes;
        Py_INCREF(query);
    } else {
        Py_ssize_t at = question - PyBytes_AS_STRING(url);
        path = PyBytes_FromStringAndSize(PyBytes_AS_STRING(url), at);
        query = PyBytes_FromStringAndSize(question + 1, url_size - at - 1);
    }
    if (path == NULL || query == NULL) {
        Py_XDECREF(path);
        Py_XDECREF(query);
        Py_DECREF(forward);
        Py_DECREF(host);
        Py_DECREF(request);
        return NULL;
    }
    PyObject *values[F_COUNT] = {
        method, path, host, cookie ? cookie : Py_None, origin ? origin : Py_None, Py_None, Py_False,
        Py_False, forward, keep_alive ? Py_True : Py_False, http10 ? Py_True : Py_False, client_ip,
        query, ws_protocol ? ws_protocol : Py_None, session ? session : Py_None,
        if_none_match ? if_none_match : Py_None, if_modified_since ? if_modified_since : Py_None,
        accept_encoding ? accept_encoding : Py_None, range ? range : Py_None, if_range ? if_range : Py_None,
    };
    for (int i = 0; i < F_COUNT; i++) {
        PyObject **slot = (PyObject **)((char *)request + field_offsets[i]);
        Py_INCREF(values[i]);
        Py_XSETREF(*slot, values[i]);
    }
    Py_XDECREF(path);
    Py_XDECREF(query);
    Py_DECREF(forward);
    Py_DECREF(host);
    return request;

decline:
    Py_XDECREF(host);
    Py_RETURN_NONE;
error:
    Py_XDECREF(host);
    return NULL;
}

/* response_head(raw, status, head_request, http10_client, keep_alive, set_cookie, extra)
 * -> (head, framing, ends_at_close) as head.response_head_raw, or None when ``raw`` is not in
 * head._PLAIN_HEADS (or is a 1xx/101 head): the Python code reads it then, and caches it. */
static PyObject *
response_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "response_head takes 7 arguments");
        return NULL;
    }
    PyObject *set_cookie = args[5], *extra = args[6];
    long status = PyLong_AsLong(args[1]);
    if (status == -1 && PyErr_Occurred())
        return NULL;
    if (status < 200 || !PyBytes_CheckExact(args[0]))
        Py_RETURN_NONE;
    PyObject *known = PyDict_GetItemWithError(plain_heads, args[0]);
    if (known == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    if (!PyTuple_CheckExact(known) || PyTuple_GET_SIZE(known) != 2
        || !PyBytes_CheckExact(PyTuple_GET_ITEM(known, 0))
        || (set_cookie != Py_None && !PyBytes_CheckExact(set_cookie))
        || (extra != Py_None && !PyBytes_CheckExact(extra)))
        Py_RETURN_NONE;
    int head_request = PyObject_IsTrue(args[2]), http10 = PyObject_IsTrue(args[3]);
    int keep_alive = PyObject_IsTrue(args[4]);
    int has_length = PyObject_IsTrue(PyTuple_GET_ITEM(known, 1));
    if (head_request < 0 || http10 < 0 || keep_alive < 0 || has_length < 0)
        return NULL;
    long framing;  /* head.NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE */
    if (head_request || status == 204 || status == 304)
        framing = 0;
    else if (has_length)
        framing = 1;
    else if (http10) {
        framing = 3;
        keep_alive = 0;
    } else
        framing = 2;
    PyObject *raw = PyTuple_GET_ITEM(known, 0), *head;
    EMIT_BYTES(head, emit_response(o, raw, framing == 2, set_cookie, extra, keep_alive, http10));
    if (head == NULL)
        return NULL;
    PyObject *result = Py_BuildValue("(NlO)", head, framing, (framing == 2 || framing == 3) ? Py_True : Py_False);
    return result;
}

/* configure(Request, _REQUEST_SPECIAL, _VALID_HOSTS, _PLAIN_HEADS): head.py's objects. */
static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *type, *table, *hosts, *heads;
    if (!PyArg_ParseTuple(args, "O!O!O!O!", &PyType_Type, &type, &PyDict_Type, &table,
                          &PyDict_Type, &hosts, &PyDict_Type, &heads))
        return NULL;
    for (int i = 0; i < F_COUNT; i++) {
        PyObject *descr = PyObject_GetAttrString(type, field_names[i]);
        if (descr == NULL)
            return NULL;
        if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)
            || ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
            Py_DECREF(descr);
            return PyErr_Format(PyExc_TypeError, "Request.%s is not a slot", field_names[i]);
        }
        field_offsets[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
    }
    Py_INCREF(type);
    Py_XSETREF(request_type, type);
    Py_INCREF(table);
    Py_XSETREF(special, table);
    Py_INCREF(hosts);
    Py_XSETREF(valid_hosts, hosts);
    Py_INCREF(heads);
    Py_XSETREF(plain_heads, heads);
    PyDict_Clear(name_kinds);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"request_head", (PyCFunction)(void (*)(void))request_head, METH_FASTCALL,
     "The forwarded head of a common request as a head.Request, or None (the Python path)."},
    {"response_head", (PyCFunction)(void (*)(void))response_head, METH_FASTCALL,
     "head.response_head_raw for a cached worker head, or None (the Python path)."},
    {"configure", configure, METH_VARARGS, "Hand over head.py's Request type and tables."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "fleet.balancer._speedups",
    "The common request and response heads in C (see balancer.head).", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if ((empty_bytes = PyBytes_FromStringAndSize("", 0)) == NULL)
        return NULL;
    if ((name_kinds = PyDict_New()) == NULL)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    PyObject *names = Py_BuildValue("(sssssssssssssssss)", "hop", "connection", "upgrade",
        "transfer-encoding", "forwarding", "host", "content-length", "cookie", "origin", "claim",
        "sec-websocket-protocol", "bokeh-session-id", "if-none-match", "if-modified-since",
        "accept-encoding", "range", "if-range");
    if (names == NULL || PyModule_AddObject(module, "KIND_NAMES", names) < 0) {
        Py_XDECREF(names);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
