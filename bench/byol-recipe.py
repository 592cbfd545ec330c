# BYOL recipe search on Fashion-MNIST in PyTorch (not part of the engine): the same resnet-small, heads, EMA target
# and loss as the engine's BYOL, with flags for the knobs, batched augmentation, a converged standardized L-BFGS
# linear probe with a weight-decay sweep on a held-out part of TRAIN, and kNN. Unlike the engine (and BYOL's
# official code), the target starts as a copy of the online network; --no-target-copy gives it its own init.
# --init engine redraws every conv and Linear weight as the engine does (nn/layers.ts Conv2d, nn/module.ts Linear:
# Kaiming-normal, fan_in = Cin*k*k, ReLU gain); biases and BN are PyTorch's defaults in both, as in the engine.
# With --init engine --no-target-copy --scale-min 0.08 the script trains the engine's default recipe.
# The figures in README "Results of the reference run" and byol/train.ts's defaults come from it; the runs are in
# bench/results/recipe-search.md (table) and .jsonl (raw).
# Usage: /usr/bin/python3 bench/byol-recipe.py --tag NAME [flags] [--out FILE]   (one thread; appends a JSON line
#   to FILE, default runs/recipe-search.jsonl), e.g. --tag b64 --epochs 1 --batch 64 --lr 3e-3 --lr-scale 0
import argparse, copy, gzip, json, math, os, time, numpy as np, torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(1)
ap = argparse.ArgumentParser()
ap.add_argument('--tag', default='run'); ap.add_argument('--seed', type=int, default=0)
ap.add_argument('--width', type=int, default=8); ap.add_argument('--epochs', type=float, default=2)
ap.add_argument('--batch', type=int, default=256); ap.add_argument('--lr', type=float, default=3e-3)
ap.add_argument('--opt', default='adam', choices=['adam', 'sgd', 'lars']); ap.add_argument('--wd', type=float, default=1e-6)
ap.add_argument('--lr-scale', type=int, default=1, help='multiply lr by B/256')
ap.add_argument('--warmup', type=float, default=0.1); ap.add_argument('--tau', type=float, default=0.99)
ap.add_argument('--proj-hidden', type=int, default=512); ap.add_argument('--proj-dim', type=int, default=128)
ap.add_argument('--pred-hidden', type=int, default=512)
ap.add_argument('--widths', default='', help='stage widths a,b,c,d (overrides --width)')
ap.add_argument('--expand', type=int, default=0, help='1x1 conv+BN+ReLU to this many channels before the pool')
ap.add_argument('--stem-stride', type=int, default=1)
ap.add_argument('--threads', type=int, default=1)
ap.add_argument('--quick-probe', action='store_true', help='one L-BFGS fit (wd 1e-4, 150 iterations), no held-out wd choice')
ap.add_argument('--scale-min', type=float, default=0.2); ap.add_argument('--scale-max', type=float, default=1.0)
ap.add_argument('--flip', type=float, default=0.5); ap.add_argument('--jitter-p', type=float, default=0.8)
ap.add_argument('--bright', type=float, default=0.4); ap.add_argument('--contrast', type=float, default=0.4)
ap.add_argument('--sol1', type=float, default=0.0); ap.add_argument('--sol2', type=float, default=0.2)
ap.add_argument('--blur1', type=float, default=0.0); ap.add_argument('--blur2', type=float, default=0.0)
ap.add_argument('--no-target-copy', action='store_true', help='target initialised from its own draw (the engine and BYOL\'s official code)')
ap.add_argument('--target-copy', dest='no_target_copy', action='store_false', help='undo an earlier --no-target-copy (the default)')
ap.add_argument('--init', default='torch', choices=['torch', 'engine'], help='weight init: PyTorch defaults, or the engine\'s Kaiming-normal fan_in')
ap.add_argument('--probe-every', type=float, default=0, help='also probe every N epochs (costs feature passes)')
ap.add_argument('--random-only', action='store_true'); ap.add_argument('--pixels', action='store_true')
ap.add_argument('--out', default='runs/recipe-search.jsonl', help='results file (one JSON line per run)')
ap.add_argument('--max-minutes', type=float, default=0, help='stop training early (schedules still span full run)')
a = ap.parse_args()
torch.manual_seed(a.seed); np.random.seed(a.seed); torch.set_num_threads(a.threads)

def idx(p):
    b = gzip.open(p).read()
    if b[2] == 8 and b[3] == 3: n, h, w = np.frombuffer(b[4:16], '>i4'); return np.frombuffer(b[16:], np.uint8).reshape(n, h, w)
    return np.frombuffer(b[8:], np.uint8)
D = '/usr/share/datasets/fashion-mnist/'
Xtr = torch.tensor(idx(D+'train-images-idx3-ubyte.gz')).float().div(255).unsqueeze(1); Ytr = torch.tensor(idx(D+'train-labels-idx1-ubyte.gz')).long()
Xte = torch.tensor(idx(D+'t10k-images-idx3-ubyte.gz')).float().div(255).unsqueeze(1); Yte = torch.tensor(idx(D+'t10k-labels-idx1-ubyte.gz')).long()
MEAN, STD = 0.286, 0.353

class Block(nn.Module):
    def __init__(s, i, o, st):
        super().__init__(); s.c1 = nn.Conv2d(i, o, 3, st, 1, bias=False); s.b1 = nn.BatchNorm2d(o); s.c2 = nn.Conv2d(o, o, 3, 1, 1, bias=False); s.b2 = nn.BatchNorm2d(o)
        s.sc = nn.Sequential() if st == 1 and i == o else nn.Sequential(nn.Conv2d(i, o, 1, st, bias=False), nn.BatchNorm2d(o))
    def forward(s, x): return F.relu(s.b2(s.c2(F.relu(s.b1(s.c1(x))))) + s.sc(x))
class Enc(nn.Module):
    def __init__(s, w):
        super().__init__(); s.stem = nn.Sequential(nn.Conv2d(1, w[0], 3, a.stem_stride, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU())
        layers = []; c = w[0]
        for k, o in enumerate(w): layers.append(Block(c, o, 1 if k == 0 else 2)); c = o
        if a.expand: layers += [nn.Conv2d(c, a.expand, 1, bias=False), nn.BatchNorm2d(a.expand), nn.ReLU()]; c = a.expand
        s.layers = nn.Sequential(*layers); s.dim = c
    def forward(s, x): return F.adaptive_avg_pool2d(s.layers(s.stem(x)), 1).flatten(1)
def mlp(i, h, o): return nn.Sequential(nn.Linear(i, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Linear(h, o, bias=False))
def init_(m):
    # the engine: weight ~ N(0, 2/fan_in) for every conv (fan_in = Cin*k*k) and Linear (fan_in = in); a Linear bias
    # ~ U(+-1/sqrt(in)) and BN gamma 1 / beta 0 are PyTorch's defaults already, and the convs have no bias
    if a.init == 'engine':
        for mod in m.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)): nn.init.kaiming_normal_(mod.weight, mode='fan_in', nonlinearity='relu')
    return m
widths = [int(v) for v in a.widths.split(',')] if a.widths else [a.width, 2 * a.width, 4 * a.width, 8 * a.width]

# ---- batched augmentation (same distributions as the prototype's per-image loop) ----
def aug(x, sol=0.0, blur=0.0):
    n = x.shape[0]
    area = torch.empty(n).uniform_(a.scale_min, a.scale_max)
    r = torch.exp(torch.empty(n).uniform_(math.log(3/4), math.log(4/3)))
    w = (area * 784 * r).sqrt().round().clamp(1, 28); h = (area * 784 / r).sqrt().round().clamp(1, 28)
    x0 = (torch.rand(n) * (28 - w + 1)).floor(); y0 = (torch.rand(n) * (28 - h + 1)).floor()
    flip = torch.where(torch.rand(n) < a.flip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = w / 28 * flip; theta[:, 0, 2] = (x0 + w / 2) / 14 - 1
    theta[:, 1, 1] = h / 28; theta[:, 1, 2] = (y0 + h / 2) / 14 - 1
    grid = F.affine_grid(theta, (n, 1, 28, 28), align_corners=False)
    c = F.grid_sample(x, grid, mode='bilinear', padding_mode='border', align_corners=False)
    if a.jitter_p > 0:
        on = (torch.rand(n, 1, 1, 1) < a.jitter_p).float()
        db = torch.empty(n, 1, 1, 1).uniform_(-a.bright, a.bright) * on
        fc = 1 + torch.empty(n, 1, 1, 1).uniform_(-a.contrast, a.contrast) * on
        def B(t): return (t + db).clamp(0, 1)
        def C(t): m = t.mean((1, 2, 3), keepdim=True); return ((t - m) * fc + m).clamp(0, 1)
        bc = torch.rand(n, 1, 1, 1) < 0.5
        c = torch.where(bc, C(B(c)), B(C(c)))
    if blur > 0:  # 3-tap gaussian, sigma ~ U[0.1, 2] (the engine's kernel at 28 px)
        sig = torch.empty(n).uniform_(0.1, 2.0); t = torch.arange(-1, 2).float()
        k = torch.exp(-t[None] ** 2 / (2 * sig[:, None] ** 2)); k = k / k.sum(1, keepdim=True)
        on = torch.rand(n) < blur; k[~on] = torch.tensor([0., 1., 0.])
        cp = F.pad(c, (1, 1, 1, 1), mode='reflect').transpose(0, 1)  # 1,n,H,W grouped conv
        cp = F.conv2d(cp, k[:, None, None, :], groups=n); c = F.conv2d(cp, k[:, None, :, None], groups=n).transpose(0, 1)
    if sol > 0:
        s = torch.rand(n, 1, 1, 1) < sol
        c = torch.where(s & (c >= 0.5), 1 - c, c)
    return (c - MEAN) / STD

# ---- evaluation ----
def features(enc, X):
    enc.eval(); fs = []
    with torch.no_grad():
        for i in range(0, len(X), 2000): fs.append(enc((X[i:i+2000] - MEAN) / STD))
    enc.train(); return torch.cat(fs)
def lbfgs_fit(f, y, wd, iters=300):
    W = torch.zeros(f.shape[1], 10, requires_grad=True); b = torch.zeros(10, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=iters, history_size=20, line_search_fn='strong_wolfe', tolerance_grad=1e-6, tolerance_change=1e-9)
    def clos():
        opt.zero_grad(); l = F.cross_entropy(f @ W + b, y) + wd * (W * W).sum(); l.backward(); return l
    opt.step(clos); return W.detach(), b.detach()
def acc(f, y, Wb): return ((f @ Wb[0] + Wb[1]).argmax(1) == y).float().mean().item()
WDS = [0.0, 1e-4, 1e-3]
def linear_probe(ftr, fte):
    m, s = ftr.mean(0), ftr.std(0) + 1e-6; ftr = (ftr - m) / s; fte = (fte - m) / s
    if a.quick_probe:
        Wb = lbfgs_fit(ftr, Ytr, 1e-4, iters=150); return dict(top1=acc(fte, Yte, Wb), train_top1=acc(ftr, Ytr, Wb), wd=1e-4)
    g = torch.Generator().manual_seed(123); perm = torch.randperm(60000, generator=g); tr, va = perm[:50000], perm[50000:]
    val = {wd: acc(ftr[va], Ytr[va], lbfgs_fit(ftr[tr], Ytr[tr], wd)) for wd in WDS}
    best = max(WDS, key=lambda w: (val[w], w))
    Wb = lbfgs_fit(ftr, Ytr, best)
    return dict(top1=acc(fte, Yte, Wb), train_top1=acc(ftr, Ytr, Wb), wd=best, val={str(k): round(v, 4) for k, v in val.items()})
def adam_probe(ftr, fte, epochs=30):  # the prototype's probe, for reference
    m, s = ftr.mean(0), ftr.std(0) + 1e-6; ftr = (ftr - m) / s; fte = (fte - m) / s
    g = torch.Generator().manual_seed(7)
    clf = nn.Linear(ftr.shape[1], 10); opt = torch.optim.Adam(clf.parameters(), 1e-3)
    for ep in range(epochs):
        perm = torch.randperm(len(ftr), generator=g)
        for i in range(0, len(ftr), 256):
            j = perm[i:i+256]; loss = F.cross_entropy(clf(ftr[j]), Ytr[j]); opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad(): return (clf(fte).argmax(1) == Yte).float().mean().item()
def knn(ftr, fte, k=200, T=0.1):
    ftr = F.normalize(ftr, dim=1); fte = F.normalize(fte, dim=1); correct = 0
    for i in range(0, len(fte), 500):
        sim = fte[i:i+500] @ ftr.T; v, j = sim.topk(k, dim=1); wts = (v / T).exp()
        votes = torch.zeros(len(v), 10).scatter_add_(1, Ytr[j], wts); correct += (votes.argmax(1) == Yte[i:i+500]).sum().item()
    return correct / len(fte)
def evaluate(enc, with_adam=False):
    t0 = time.time(); ftr, fte = features(enc, Xtr), features(enc, Xte); tf = time.time() - t0
    r = linear_probe(ftr, fte); r['knn'] = knn(ftr, fte)
    if with_adam: r['adam30_probe'] = adam_probe(ftr, fte)
    r['eval_s'] = round(time.time() - t0, 1); r['feat_s'] = round(tf, 1); return r

def log_result(d):
    d.update(tag=a.tag, args=vars(a))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, 'a') as f: f.write(json.dumps(d) + '\n')
    print('RESULT', json.dumps(d), flush=True)

if a.pixels:
    r = linear_probe(Xtr.flatten(1), Xte.flatten(1)); log_result(dict(kind='pixels', probe=r)); raise SystemExit
T0 = time.time()
online = nn.ModuleDict(dict(enc=init_(Enc(widths)))); dim = online['enc'].dim
if a.random_only:
    r = evaluate(online['enc'], with_adam=True); print('random', r); log_result(dict(kind='random', random=r)); raise SystemExit
online['proj'] = init_(mlp(dim, a.proj_hidden, a.proj_dim)); online['pred'] = init_(mlp(a.proj_dim, a.pred_hidden, a.proj_dim))
target = init_(nn.ModuleDict(dict(enc=Enc(widths), proj=mlp(dim, a.proj_hidden, a.proj_dim))))
if not a.no_target_copy: target.load_state_dict({k: v for k, v in online.state_dict().items() if not k.startswith('pred')})
for p in target.parameters(): p.requires_grad = False

class LARS(torch.optim.Optimizer):  # BYOL/SimCLR style: BN/bias excluded from adaptation and weight decay
    def __init__(s, groups, lr, wd, momentum=0.9, eta=1e-3): super().__init__(groups, dict(lr=lr, wd=wd, momentum=momentum, eta=eta))
    @torch.no_grad()
    def step(s):
        for g in s.param_groups:
            for p in g['params']:
                if p.grad is None: continue
                d = p.grad
                if g['lars']:
                    d = d.add(p, alpha=g['wd']); pn, dn = p.norm(), d.norm()
                    d = d * torch.where((pn > 0) & (dn > 0), g['eta'] * pn / dn, torch.ones_like(pn))
                st = s.state[p]; buf = st.get('m')
                if buf is None: buf = st['m'] = torch.zeros_like(p)
                buf.mul_(g['momentum']).add_(d); p.add_(buf, alpha=-g['lr'])
params = list(online.parameters())
if a.opt == 'lars':
    big = [p for p in params if p.ndim > 1]; small = [p for p in params if p.ndim <= 1]
    opt = LARS([dict(params=big, lars=True), dict(params=small, lars=False)], lr=0.0, wd=a.wd)
elif a.opt == 'sgd': opt = torch.optim.SGD(params, lr=0.0, momentum=0.9, weight_decay=a.wd)
else: opt = torch.optim.Adam(params, lr=0.0, weight_decay=a.wd)
B = a.batch; spe = 60000 // B; steps = int(round(a.epochs * spe)); warm = max(1, int(steps * a.warmup))
base_lr = a.lr * (B / 256 if a.lr_scale else 1)
def loss_fn(p, z): return (2 - 2 * F.cosine_similarity(p, z, dim=-1)).mean()
print(f'{a.tag}: widths {widths} dim {dim} steps {steps} batch {B} base_lr {base_lr} init {a.init} target {"own init" if a.no_target_copy else "copy"}', flush=True)
curve = []; t0 = time.time(); perm = torch.randperm(60000); pos = 0; train_s = 0.0; done = 0
for k in range(steps):
    lr = base_lr * (k / warm if k < warm else 0.5 * (1 + math.cos(math.pi * (k - warm) / max(1, steps - warm))))
    for g in opt.param_groups: g['lr'] = lr
    if pos + B > 60000: perm = torch.randperm(60000); pos = 0
    x = Xtr[perm[pos:pos+B]]; pos += B
    v1, v2 = aug(x, a.sol1, a.blur1), aug(x, a.sol2, a.blur2)
    # separate BN batches per view, as in the prototype
    p1 = online['pred'](online['proj'](online['enc'](v1))); p2 = online['pred'](online['proj'](online['enc'](v2)))
    with torch.no_grad(): z1 = target['proj'](target['enc'](v1)); z2 = target['proj'](target['enc'](v2))
    loss = loss_fn(p1, z2) + loss_fn(p2, z1)
    opt.zero_grad(); loss.backward(); opt.step()
    tau = 1 - (1 - a.tau) * (math.cos(math.pi * k / steps) + 1) / 2
    with torch.no_grad():
        for po, pt in zip(list(online['enc'].parameters()) + list(online['proj'].parameters()), list(target['enc'].parameters()) + list(target['proj'].parameters())): pt.mul_(tau).add_(po, alpha=1 - tau)
        for bo, bt in zip(list(online['enc'].buffers()) + list(online['proj'].buffers()), list(target['enc'].buffers()) + list(target['proj'].buffers())): bt.copy_(bo)
    done = k + 1
    if k % 50 == 0: print(k, steps, f'loss {loss.item():.3f} lr {lr:.5f} tau {tau:.4f} {time.time()-t0:.0f}s', flush=True); curve.append((k, round(loss.item(), 4)))
    if a.probe_every and (k + 1) % int(round(a.probe_every * spe)) == 0 and k + 1 < steps:
        ts = time.time(); r = evaluate(online['enc']); t0 += time.time() - ts
        print('PROBE at', k + 1, r, flush=True); curve.append((k + 1, 'probe', r['top1'], r['knn']))
    if a.max_minutes and time.time() - t0 > 60 * a.max_minutes: print('time cap hit at step', k + 1); break
train_s = time.time() - t0
r = evaluate(online['enc'])
print('byol', r, flush=True)
log_result(dict(kind='byol', steps=done, planned_steps=steps, pairs=done * B, train_s=round(train_s, 1), pairs_per_s=round(done * B / train_s, 1),
                byol=r, final_loss=curve[-1], curve=curve, total_s=round(time.time() - T0, 1)))
