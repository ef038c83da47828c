"""Drives a NEO/py client (neo.client) against a cluster, for the
interoperability test of cmd/neo (TestNEOpyClient).

    neopy_client.py MASTERS CLUSTER write KEY N
        root[KEY] = PersistentMapping(n=0, who='python', text=...,
        tree=OOBTree), then N transactions that each add 1 to n and an item
        to tree; prints "tid <hex>" after each commit.
    neopy_client.py MASTERS CLUSTER read KEY
        prints root[KEY] as JSON (n, who, len(text), tree items).
    neopy_client.py MASTERS CLUSTER count KEY N
        adds 1 to the BTrees.Length root[KEY] (made if missing) in each of
        N transactions; Length resolves concurrent changes, so other
        clients adding to it at the same time cause no ConflictError (one
        is retried, in case two clients create it at once).
    neopy_client.py MASTERS CLUSTER watch KEY N
        loads the root, prints "ready", then begins a transaction every
        10 ms on the same connection until root[KEY]['n'] >= N (which it
        learns by invalidations from the other clients' commits), printing
        "seen <n>" at each change.
"""

import json
import sys
import time

import transaction
import ZODB
from BTrees.Length import Length
from BTrees.OOBTree import OOBTree
from neo.client.Storage import Storage
from persistent.mapping import PersistentMapping
from ZODB.POSException import ConflictError


def main():
    masters, cluster, cmd = sys.argv[1:4]
    storage = Storage(master_nodes=masters, name=cluster)
    db = ZODB.DB(storage)
    try:
        conn = db.open()
        root = conn.root()
        if cmd == 'write':
            key, n = sys.argv[4], int(sys.argv[5])
            m = root[key] = PersistentMapping()
            m['n'] = 0
            m['who'] = 'python'
            m['text'] = 'compressible ' * 1000
            m['tree'] = OOBTree()
            transaction.commit()
            print('tid', storage.lastTransaction().hex(), flush=True)
            for i in range(n):
                m['n'] += 1
                m['tree']['k%03d' % i] = i
                transaction.commit()
                print('tid', storage.lastTransaction().hex(), flush=True)
        elif cmd == 'read':
            m = root[sys.argv[4]]
            out = {'n': m['n'], 'who': m['who']}
            if 'text' in m:
                out['text'] = len(m['text'])
            if 'tree' in m:
                out['tree'] = dict(m['tree'].items())
            print(json.dumps(out, sort_keys=True), flush=True)
        elif cmd == 'count':
            key, n = sys.argv[4], int(sys.argv[5])
            for i in range(n):
                for attempt in range(100):
                    try:
                        transaction.begin()
                        if key not in root:
                            root[key] = Length()
                        root[key].change(1)
                        transaction.commit()
                        break
                    except ConflictError:
                        transaction.abort()
                else:
                    raise RuntimeError('no commit in 100 attempts')
            transaction.begin()
            print('count', root[key].value, flush=True)
        elif cmd == 'watch':
            key, n = sys.argv[4], int(sys.argv[5])
            last = root.get(key)  # the root's state is loaded and cached
            print('ready', flush=True)
            deadline = time.time() + 60
            while time.time() < deadline:
                transaction.begin()
                m = root.get(key)
                cur = m['n'] if m is not None else None
                if cur != last:
                    print('seen', cur, flush=True)
                    last = cur
                if cur is not None and cur >= n:
                    return 0
                time.sleep(0.01)
            print('timeout', flush=True)
            return 1
        else:
            print('unknown command', cmd, file=sys.stderr)
            return 2
    finally:
        db.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
