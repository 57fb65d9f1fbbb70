/*
 * Who handles SIGCHLD (see sigchld.h).
 */
#include "sigchld.h"

#include "platform.h"

#ifdef GIPC_HAVE_DLADDR
#include <dlfcn.h>
#endif
#include <signal.h>

/*
 * sigchld_handler_file() -> str or None
 *
 * The file of the shared object whose function handles SIGCHLD, "" if
 * unknown (always, in a build without dladdr(): see platform.h), None if
 * SIGCHLD has no handler.  gevent's child watchers
 * install libev's handler from C, invisible to the signal module; this is
 * how gipc tells that one from a handler of the program's own.
 */
PyObject *
gipc_sigchld_handler_file(PyObject *Py_UNUSED(module),
                          PyObject *Py_UNUSED(ignored))
{
    struct sigaction current;
#ifdef GIPC_HAVE_DLADDR
    Dl_info info;
#endif
    void *handler;

    if (sigaction(SIGCHLD, NULL, &current) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (current.sa_flags & SA_SIGINFO) {
        handler = (void *)current.sa_sigaction;
    }
    else if (current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN) {
        Py_RETURN_NONE;
    }
    else {
        handler = (void *)current.sa_handler;
    }
#ifdef GIPC_HAVE_DLADDR
    if (dladdr(handler, &info) == 0 || info.dli_fname == NULL) {
        return PyUnicode_FromString("");
    }
    return PyUnicode_DecodeFSDefault(info.dli_fname);
#else
    (void)handler;
    return PyUnicode_FromString("");
#endif
}
