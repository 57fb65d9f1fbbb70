"""The issue's done-when load: 60 children started at once from 60
greenlets, each ping-ponging 200 messages with the parent."""
import os

import gevent

import gipc
import gipc.gipc

CHILDREN = 60
MESSAGES = 200


def _pong(end):
    for _ in range(MESSAGES):
        end.put(end.get() + 1)
    end.put(("done", os.getpid()))


def _one(index):
    with gipc.pipe(duplex=True) as (mine, theirs):
        p = gipc.start_process(_pong, args=(theirs,), name="pong-%d" % index)
        value = index * 1000
        for _ in range(MESSAGES):
            mine.put(value)
            reply = mine.get(timeout=60)
            assert reply == value + 1
            value = reply
        done = mine.get(timeout=60)
        p.join(timeout=60)
    code, pid = p.exitcode, p.pid
    p.close()
    return code, done, pid


def test_sixty_children_ping_pong_at_once():
    fds_before = len(os.listdir("/proc/self/fd"))
    workers = [gevent.spawn(_one, i) for i in range(CHILDREN)]
    gevent.joinall(workers, timeout=120, raise_error=True)
    assert all(g.successful() for g in workers)
    results = [g.value for g in workers]
    assert [code for code, _, _ in results] == [0] * CHILDREN
    assert all(done == ("done", pid) for _, done, pid in results)
    assert len({pid for _, _, pid in results}) == CHILDREN
    # No descriptor, handle or child is left (the conftest fixture checks
    # zombies and handles too).
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert gipc.gipc._get_all_handles() == []
