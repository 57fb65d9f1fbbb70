"""Runs one case of one implementation in a fresh process and prints one
line ``BENCHRESULT {json}``.  Started by bench.runner with a timeout (the
runner kills the worker's whole process group, children included, when it
expires).  For gipc 1.8 it runs under the virtual environment's python
with the repository root appended to sys.path (see impl_gipc18.py)."""
import json
import sys
import traceback

from .common import BenchError, NotApplicable

MARK = "BENCHRESULT "


def _transport(impl, params):
    if impl == "gipcgreedy":
        from . import impl_gipc
        return impl_gipc.greedy_transport()
    if impl in ("gipc", "gipc18"):
        from . import impl_gipc
        t = impl_gipc.GipcTransport(
            impl, params.get("pipe_size") if impl == "gipc" and
            params.get("pipe_size_explicit") else None)
        return t
    if impl == "mp":
        from . import impl_mp
        return impl_mp.transport(params)
    if impl in ("pyref", "pyrefgipc"):
        from . import impl_pyref
        return impl_pyref.transport(params)
    raise ValueError("unknown implementation %r" % impl)


def _become_gevent_application():
    """Import gevent and start its hub, as the gevent application a user
    would fork from does.

    Done for every Python implementation alike, the blocking ones too: a
    fork copies the parent's page tables and each page the child (or the
    parent, while they share it) writes, so a worker with gevent loaded
    forks more slowly than a bare interpreter; without this, case 5 would
    compare how much each worker imported as much as how each library
    starts a child.  ``--bare-refs`` skips it for multiprocessing and the
    Python reference.
    """
    import gevent
    gevent.get_hub()
    gevent.sleep(0)


def run(impl, case_id, params):
    if params.get("pin_cpu") is not None:
        import os
        os.sched_setaffinity(0, {params["pin_cpu"]})
    if impl in ("cref", "crefspin"):
        from . import impl_cref
        return impl_cref.run(case_id, params, spin=impl == "crefspin")
    if impl == "gipcgreedy" and not case_id.startswith("8"):
        raise NotApplicable("the greedy reference is for the loop-stall "
                            "cases only")
    if impl == "pyrefgipc" and case_id != "5":
        raise NotApplicable("the floor reference is for start + join only")
    if impl in ("gipc", "gipc18", "gipcgreedy", "pyrefgipc") or not \
            params.get("bare_refs"):
        _become_gevent_application()
    if impl == "pyrefgipc":
        import gipc  # noqa: F401  (what it costs a fork is the point)
    from . import scenarios
    T = _transport(impl, params)
    out = scenarios.run(T, case_id, params)
    if hasattr(T, "info"):
        out.update({"_" + k: v for k, v in T.info().items()})
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    impl, case_id, params = argv[0], argv[1], json.loads(argv[2])
    code = 0
    try:
        result = {"ok": True, "metrics": run(impl, case_id, params)}
    except NotApplicable as exc:
        result = {"ok": True, "na": str(exc)}
    except BenchError as exc:
        result = {"ok": False, "error": str(exc)}
        code = 3
    except BaseException as exc:  # crash: report it, with the traceback
        traceback.print_exc()
        result = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
        code = 4
    sys.stdout.write(MARK + json.dumps(result) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
