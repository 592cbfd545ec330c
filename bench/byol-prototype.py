# A PyTorch prototype of the BYOL recipe (not part of the engine): picks settings for the CPU-budget run before
# spending engine time on them. It prints the random-init encoder's linear probe, then trains BYOL and probes again.
# Usage: /usr/bin/python3 bench/byol-prototype.py WIDTHS EPOCHS BATCH THREADS LR OPTIMIZER
#   e.g. /usr/bin/python3 bench/byol-prototype.py 16,32,64 2 256 1 0.003 adam   (gave random 0.727, BYOL 0.768 here)
import gzip, math, sys, time, numpy as np, torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
torch.manual_seed(0)
def idx(p):
    b = gzip.open(p).read()
    if b[2] == 8 and b[3] == 3: n, h, w = np.frombuffer(b[4:16], '>i4'); return np.frombuffer(b[16:], np.uint8).reshape(n, h, w)
    return np.frombuffer(b[8:], np.uint8)
D = '/usr/share/datasets/fashion-mnist/'
Xtr = torch.tensor(idx(D+'train-images-idx3-ubyte.gz')).float().div(255).unsqueeze(1); Ytr = torch.tensor(idx(D+'train-labels-idx1-ubyte.gz')).long()
Xte = torch.tensor(idx(D+'t10k-images-idx3-ubyte.gz')).float().div(255).unsqueeze(1); Yte = torch.tensor(idx(D+'t10k-labels-idx1-ubyte.gz')).long()
MEAN, STD = 0.286, 0.353
widths = [int(x) for x in sys.argv[1].split(',')] if len(sys.argv) > 1 else [16, 32, 64]
epochs = float(sys.argv[2]) if len(sys.argv) > 2 else 1
B = int(sys.argv[3]) if len(sys.argv) > 3 else 256
class Block(nn.Module):
    def __init__(s, i, o, st):
        super().__init__(); s.c1 = nn.Conv2d(i, o, 3, st, 1, bias=False); s.b1 = nn.BatchNorm2d(o); s.c2 = nn.Conv2d(o, o, 3, 1, 1, bias=False); s.b2 = nn.BatchNorm2d(o)
        s.sc = nn.Sequential() if st == 1 and i == o else nn.Sequential(nn.Conv2d(i, o, 1, st, bias=False), nn.BatchNorm2d(o))
    def forward(s, x): return F.relu(s.b2(s.c2(F.relu(s.b1(s.c1(x))))) + s.sc(x))
class Enc(nn.Module):
    def __init__(s, w):
        super().__init__(); s.stem = nn.Sequential(nn.Conv2d(1, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU())
        layers = []; c = w[0]
        for k, o in enumerate(w): layers.append(Block(c, o, 1 if k == 0 else 2)); c = o
        s.layers = nn.Sequential(*layers); s.dim = c
    def forward(s, x): return F.adaptive_avg_pool2d(s.layers(s.stem(x)), 1).flatten(1)
def mlp(i, h, o): return nn.Sequential(nn.Linear(i, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Linear(h, o, bias=False))
H, P = 512, 128
def aug(x, blur=False, sol=0.0):
    n = x.shape[0]; out = torch.empty_like(x)
    for i in range(n):
        area = np.random.uniform(0.2, 1) * 28 * 28; r = math.exp(np.random.uniform(math.log(3/4), math.log(4/3)))
        w = min(28, round(math.sqrt(area * r))); h = min(28, round(math.sqrt(area / r)))
        y0 = np.random.randint(0, 28 - h + 1); x0 = np.random.randint(0, 28 - w + 1)
        c = x[i:i+1, :, y0:y0+h, x0:x0+w]; c = F.interpolate(c, size=(28, 28), mode='bilinear', align_corners=False)
        if np.random.rand() < 0.5: c = c.flip(3)
        if np.random.rand() < 0.8:
            ops = [0, 1]; np.random.shuffle(ops)
            for o in ops:
                if o == 0: c = (c + np.random.uniform(-0.4, 0.4)).clamp(0, 1)
                else: m = c.mean(); c = ((c - m) * np.random.uniform(0.6, 1.4) + m).clamp(0, 1)
        if np.random.rand() < sol: c = torch.where(c < 0.5, c, 1 - c)
        out[i] = c[0]
    return (out - MEAN) / STD
def features(enc, X):
    enc.eval(); fs = []
    with torch.no_grad():
        for i in range(0, len(X), 1000): fs.append(enc((X[i:i+1000] - MEAN) / STD))
    return torch.cat(fs)
def linear_probe(enc):
    ftr, fte = features(enc, Xtr), features(enc, Xte)
    m, s = ftr.mean(0), ftr.std(0) + 1e-6; ftr = (ftr - m) / s; fte = (fte - m) / s
    clf = nn.Linear(ftr.shape[1], 10); opt = torch.optim.Adam(clf.parameters(), 1e-3)
    for ep in range(30):
        perm = torch.randperm(len(ftr))
        for i in range(0, len(ftr), 256):
            j = perm[i:i+256]; loss = F.cross_entropy(clf(ftr[j]), Ytr[j]); opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad(): return (clf(fte).argmax(1) == Yte).float().mean().item()
t0 = time.time()
enc = Enc(widths); print('random-init linear', linear_probe(enc), 'dim', enc.dim, f'{time.time()-t0:.0f}s', flush=True)
online = nn.ModuleDict(dict(enc=Enc(widths), proj=mlp(enc.dim, H, P), pred=mlp(P, H, P)))
target = nn.ModuleDict(dict(enc=Enc(widths), proj=mlp(enc.dim, H, P)))
for p in target.parameters(): p.requires_grad = False
steps = int(epochs * 60000 / B); warm = max(1, steps // 10)
OPT = sys.argv[6] if len(sys.argv) > 6 else 'sgd'
opt = torch.optim.SGD(online.parameters(), lr=0.0, momentum=0.9, weight_decay=1e-5) if OPT == 'sgd' else torch.optim.Adam(online.parameters(), lr=0.0, weight_decay=1e-6)
base_lr = float(sys.argv[5]) if len(sys.argv) > 5 else 0.05
def loss_fn(p, z): return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()
t0 = time.time()
for k in range(steps):
    lr = base_lr * B / 256 * (k / warm if k < warm else 0.5 * (1 + math.cos(math.pi * (k - warm) / (steps - warm))))
    for g in opt.param_groups: g['lr'] = lr
    idxs = torch.randint(0, 60000, (B,)); x = Xtr[idxs]
    v1, v2 = aug(x), aug(x, sol=0.2)
    p1 = online['pred'](online['proj'](online['enc'](v1))); p2 = online['pred'](online['proj'](online['enc'](v2)))
    with torch.no_grad(): z1 = target['proj'](target['enc'](v1)); z2 = target['proj'](target['enc'](v2))
    loss = loss_fn(p1, z2) + loss_fn(p2, z1)
    opt.zero_grad(); loss.backward(); opt.step()
    tau = 1 - (1 - 0.99) * (math.cos(math.pi * k / steps) + 1) / 2
    with torch.no_grad():
        for po, pt in zip(list(online['enc'].parameters()) + list(online['proj'].parameters()), list(target['enc'].parameters()) + list(target['proj'].parameters())): pt.mul_(tau).add_(po, alpha=1 - tau)
    if k % 50 == 0: print(k, steps, f'loss {loss.item():.3f} lr {lr:.3f} {time.time()-t0:.0f}s', flush=True)
print('train time', time.time() - t0)
print('byol linear', linear_probe(online['enc']), flush=True)
