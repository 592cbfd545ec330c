#!/usr/bin/python3
"""The PyTorch peer of bench/run.ts: native PyTorch on the CPU (Debian's python3-torch), the bar for the BYOL step.

It builds the same network and step as bench/cases/byol-step.ts: resnet-small (3x3/1 stem, no pool, one BasicBlock
per stage, 1x1 conv + BN shortcuts where the shape changes, no conv biases), the projector and predictor
(Linear -> BN -> ReLU -> Linear without bias), the target without a predictor and with its own initialization, BN
with batch statistics per view (each view goes through the online and the target network separately, running
statistics updated), the symmetric 2 - 2cos loss against the stopped target, Adam (coupled weight decay on weights
only, as the engine's excludeBiasAndNorm), then the EMA of the target toward the updated online weights. No
augmentation: two fixed views. NCHW, or channels_last where that is faster (chosen by measuring, see pick_format).

Protocol (bench/peer-torch.ts): one JSON object per line on stdin, one answer per line on stdout.
  {"type": "init"}                          -> {"name": ..., "threads": n}
  {"type": "setup", "case": {...}}          -> {"formats": [...]}: builds the case in each memory format asked
                                               ("memoryFormats", default both) and runs one step of each
  {"type": "run", "k": k, "format": f}      -> {"ms": per op, "cpuMs": per op}  (k steps back to back)
  {"type": "select", "format": f}           keeps only that format's model
  {"type": "dispose"} / {"type": "exit"}
bench/peer-torch.ts runs two of these processes, with libgomp's default waits and passive ones, and keeps whichever
process and format runs the step fastest.
Every answer carries {"ok": true, "cpuTotalMs": this process's CPU time so far} or {"ok": false, "error": ...}.
Standalone: /usr/bin/python3 bench/peer-torch.py --standalone [--width 16 --batch 64 --format auto|contiguous|channels_last]
"""

import json
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # answered at init, so the bench can name the missing peer and go on
    torch = None
    MISSING = str(e)

THREADS = 2


def random_data(n, seed):
    """mulberry32 uniform in [-1, 1): the same inputs as bench/case.ts's randomData."""
    a = seed & 0xFFFFFFFF
    out = [0.0] * n
    for i in range(n):
        a = (a + 0x6D2B79F5) & 0xFFFFFFFF
        t = a
        t = ((t ^ (t >> 15)) * (t | 1)) & 0xFFFFFFFF
        t ^= (t + (((t ^ (t >> 7)) * (t | 61)) & 0xFFFFFFFF)) & 0xFFFFFFFF
        out[i] = ((t ^ (t >> 14)) & 0xFFFFFFFF) / 4294967296 * 2 - 1
    return out


Module = nn.Module if torch is not None else object


class BasicBlock(Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(h + (self.downsample(x) if self.downsample is not None else x))


class ResNetSmall(Module):
    def __init__(self, cin, width):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        blocks = []
        c = width
        for i in range(4):
            planes = width * 2**i
            blocks.append(BasicBlock(c, planes, 2 if i > 0 else 1))
            c = planes
        self.layers = nn.Sequential(*blocks)
        self.feature_dim = c

    def forward(self, x):
        h = self.layers(F.relu(self.bn1(self.conv1(x))))
        return h.mean((2, 3))


def mlp_head(cin, hidden, cout):
    return nn.Sequential(nn.Linear(cin, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, cout, bias=False))


class Target(Module):
    def __init__(self, s):
        super().__init__()
        self.encoder = ResNetSmall(s["channels"], s["width"])
        self.projector = mlp_head(self.encoder.feature_dim, s["projHidden"], s["projDim"])

    def forward(self, x):
        return self.projector(self.encoder(x))


class Online(Target):
    def __init__(self, s):
        super().__init__(s)
        self.predictor = mlp_head(s["projDim"], s["predHidden"], s["projDim"])

    def forward(self, x):
        return self.predictor(super().forward(x))


def cos_loss(p, z):
    return 2 - 2 * (F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(1).mean()


class ByolStep:
    """One BYOL training step, as BYOL.trainStep in byol/model.ts."""

    def __init__(self, s, memory_format):
        torch.manual_seed(0)
        self.online = Online(s)
        self.target = Target(s)
        self.memory_format = memory_format
        fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
        self.online.to(memory_format=fmt)
        self.target.to(memory_format=fmt)
        self.online.train()
        self.target.train()
        for p in self.target.parameters():
            p.requires_grad_(False)
        n = s["batch"] * s["size"] * s["size"] * s["channels"]
        shape = (s["batch"], s["size"], s["size"], s["channels"])
        # the engine's views are NHWC; the same values as NCHW tensors (channels_last keeps the NHWC storage)
        self.v1 = torch.tensor(random_data(n, 1)).reshape(shape).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
        self.v2 = torch.tensor(random_data(n, 2)).reshape(shape).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
        decay = [p for n_, p in self.online.named_parameters() if p.ndim > 1]
        rest = [p for n_, p in self.online.named_parameters() if p.ndim <= 1]
        wd = s.get("weightDecay", 1e-6)
        self.opt = torch.optim.Adam([{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}], lr=s.get("lr", 3e-3), foreach=s.get("foreach", True))
        # the target's parameters mirror the online network's leading ones (the predictor is declared last)
        self.t_params = list(self.target.parameters())
        self.o_params = list(self.online.parameters())[: len(self.t_params)]
        self.tau = s.get("tau", 0.99)

    def step(self):
        with torch.no_grad():
            t1 = self.target(self.v1)
            t2 = self.target(self.v2)
        p1 = self.online(self.v1)
        p2 = self.online(self.v2)
        loss = cos_loss(p1, t2) + cos_loss(p2, t1)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            torch._foreach_mul_(self.t_params, self.tau)
            torch._foreach_add_(self.t_params, self.o_params, alpha=1 - self.tau)


def time_steps(c, k):
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(k):
        c.step()
    return (time.perf_counter() - t0) * 1000 / k, (time.process_time() - c0) * 1000 / k


def describe():
    return f"PyTorch {torch.__version__} on the CPU ({torch.get_num_threads()} threads, {'MKL-DNN' if torch.backends.mkldnn.is_available() else 'no MKL-DNN'})"


def serve():
    cands = {}
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        m = json.loads(line)
        try:
            t = m["type"]
            if t == "init":
                if torch is None:
                    raise ImportError(f"python3-torch is not installed ({MISSING})")
                value = {"name": describe(), "threads": torch.get_num_threads()}
            elif t == "setup":
                spec = m["case"]
                if spec.get("kind") != "byol-step":
                    raise ValueError(f"peer-torch: unknown case kind {spec.get('kind')!r} (expected 'byol-step')")
                cands = {f: ByolStep(spec, f) for f in spec.get("memoryFormats", ["contiguous", "channels_last"])}
                for c in cands.values():
                    c.step()
                value = {"formats": list(cands)}
            elif t == "run":
                ms, cpu = time_steps(cands[m.get("format") or next(iter(cands))], int(m["k"]))
                value = {"ms": ms, "cpuMs": cpu}
            elif t == "select":
                cands = {m["format"]: cands[m["format"]]}
                value = None
            elif t == "dispose":
                cands = {}
                value = None
            elif t == "exit":
                return
            else:
                raise ValueError(f"peer-torch: unknown request {line.strip()}")
            out.write(json.dumps({"ok": True, "value": value, "cpuTotalMs": time.process_time() * 1000}) + "\n")
        except Exception as e:  # the bench reports it and carries on without this peer's cell
            out.write(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}) + "\n")
        out.flush()


def standalone(argv):
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--standalone", action="store_true")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--format", default="auto")
    ap.add_argument("--foreach", type=int, default=1)
    ap.add_argument("--samples", type=int, default=7)
    a = ap.parse_args(argv)
    s = {"kind": "byol-step", "batch": a.batch, "size": 28, "channels": 1, "width": a.width, "projHidden": a.hidden, "projDim": a.dim, "predHidden": a.hidden, "foreach": bool(a.foreach)}
    print(describe())
    fmts = ["contiguous", "channels_last"] if a.format == "auto" else [a.format]
    cands = {f: ByolStep(s, f) for f in fmts}
    for c in cands.values():
        c.step()
        c.step()
    times = {f: [] for f in fmts}
    for _ in range(a.samples):
        for f, c in cands.items():
            times[f].append(time_steps(c, 2)[0])
    for f, t in times.items():
        med = sorted(t)[len(t) // 2]
        print(f"{f}: median {med:.1f} ms/step ({a.batch * 1000 / med:.0f} img/s), min {min(t):.1f}, samples {[round(x) for x in t]}")


if __name__ == "__main__":
    if torch is not None:
        torch.set_num_threads(THREADS)
    if "--standalone" in sys.argv:
        standalone(sys.argv[1:])
    else:
        serve()
