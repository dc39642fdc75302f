"""
Delay on a link, where the kernel has no netem qdisc: every packet iptables sends to NFQUEUE queue QUEUE is held
for DELAY_MS, then let through, in the order it came (scripts/chaos/topology.ts inserts the rule and starts this).
Usage: delay.py QUEUE DELAY_MS. Prints "ready" once bound; on SIGTERM lets through what it holds, then exits.
Runs from .tools/chaos-venv (scripts/install-chaos-tools.sh: NetfilterQueue, bindings to libnetfilter_queue).
"""
import collections
import select
import signal
import sys
import time

from netfilterqueue import COPY_META, NetfilterQueue

queue, delay = int(sys.argv[1]), float(sys.argv[2]) / 1000
held = collections.deque()
stopping = False


def hold(packet):
    held.append((time.monotonic() + delay, packet))


def stop(*_):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
nfqueue = NetfilterQueue()
nfqueue.bind(queue, hold, max_len=65536, mode=COPY_META)
print("ready", flush=True)
fd = nfqueue.get_fd()
while not stopping:
    timeout = max(0.0, held[0][0] - time.monotonic()) if held else 0.1
    if select.select([fd], [], [], min(timeout, 0.1))[0]:
        nfqueue.run(block=False)
    now = time.monotonic()
    while held and held[0][0] <= now:
        held.popleft()[1].accept()
for _, packet in held:
    packet.accept()
nfqueue.unbind()
