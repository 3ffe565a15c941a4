# Interleaved A/B timing for the LSTM workloads: python benchmarks/lstm_paired_ab.py THREADS ROUNDS
"""Interleaved A/B: each round times fastcrnn then the reference back to back; reports the
median of the per-round ratios (robust to slow drifts in background load)."""
import statistics, sys, time
import torch
sys.path.insert(0, ".")
from benchmarks.bench_lstm import _cases, _cell_models, _cell_step, _fwd, _fwd_bwd
torch.set_num_threads(int(sys.argv[1]))
rounds = int(sys.argv[2])
def t(fn):
    t0 = time.perf_counter(); fn(); return (time.perf_counter() - t0) * 1e3
def paired(a, b, n):
    a(); b()
    ra, rb, rr = [], [], []
    for _ in range(n):
        x, y = t(a), t(b)
        ra.append(x); rb.append(y); rr.append(y / x)
    return statistics.median(ra), statistics.median(rb), statistics.median(rr)
print(f"threads={torch.get_num_threads()} rounds={rounds}")
for name, models, x in _cases("cpu"):
    xg = x.clone().requires_grad_(True)
    ours, ref = models["fastcrnn"], models["nn.LSTM"]
    for case, fn in (("forward", lambda m: _fwd(m, x)), ("fwd+bwd", lambda m: _fwd_bwd(m, xg))):
        a, b, r = paired(lambda: fn(ours), lambda: fn(ref), rounds)
        print(f"{name:12s} {case:8s} fastcrnn {a:9.2f} ms  nn.LSTM {b:9.2f} ms  median ratio {r:.2f}x")
ours, ref, args = _cell_models("cpu")
a, b, r = paired(lambda: _cell_step(ours, *args), lambda: _cell_step(ref, *args), rounds * 5)
print(f"{'cell step':12s} fwd+bwd  fastcrnn {a:9.2f} ms  nn.LSTMCell {b:9.2f} ms  median ratio {r:.2f}x")
