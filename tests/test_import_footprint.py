"""What ``import gipc`` brings in.  Every module imported is memory that
every fork maps, and a module with fork hooks (logging registers some) has
them run in every start, in the parent and in the child."""
from support import run_script


def test_import_gipc_does_not_import_logging():
    done = run_script("""
        import sys
        import gevent
        assert "logging" not in sys.modules, "gevent imports logging"
        import gipc
        print(sorted(m for m in ("logging", "gevent.monkey", "gevent.lock")
                     if m in sys.modules))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
