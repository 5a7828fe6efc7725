#!/usr/bin/env python3
"""Checks Veil's distributed discrete Gaussian (DDG) accountant against the
authors' reference accounting code.

Usage (from the repository root, after `npx tsc -b packages/privacy`):

    python3 scripts/check-ddg-reference.py REFDIR [--quick] [--jobs N]
        [--verify-uncached K] [--worst K] [--tol X]

REFDIR holds two files fetched by the reviewer (NOT part of this repository;
see docs/ddg-reference-check.md for URLs, commits and how to fetch them):

  accounting_utils.py  google-research/federated, distributed_dp/accounting_utils.py
                       (Kairouz, Liu & Steinke 2021; `ddgauss_epsilon`,
                       `compute_rdp_dgaussian`, `rounded_l2_norm_bound`, ...)
  rdp_accountant.py    tensorflow/privacy,
                       tensorflow_privacy/privacy/analysis/rdp_accountant.py
                       (`get_privacy_spent`, the RDP -> (eps, delta) conversion
                       that accounting_utils reaches as `tfp.get_privacy_spent`)

Both are run as fetched. The only stand-in is the `tensorflow_privacy` package
that accounting_utils imports (`import tensorflow_privacy as tfp`): a module
object whose `compute_rdp` and `get_privacy_spent` are the functions of the
fetched rdp_accountant.py (the names tensorflow_privacy exported from it).

Grid (the reference's units): l2 clip c, gamma = 1/scale, padded dimension d,
clients n, local_stddev = z * c / sqrt(n) (update units, so the aggregate noise
multiplier is sqrt(n) * local_stddev / c = z), sampling rate q, steps T, delta,
beta = exp(-1/2):

  reference: accounting_utils.ddgauss_epsilon(gamma=1/scale, local_stddev,
             num_clients=n, l2_sens=c, beta, dim=d, q, steps=T, delta)
             (default orders RDP_ORDERS = 2..128, 256)
  Veil:      computeDistributedDiscreteGaussianEpsilon({clipNorm: c, scale,
             localStddev, clients: n, dimension: d, beta, samplingRate: q,
             steps: T, delta}) via scripts/veil-ddg-grid.mjs, twice:
             "sameOrders" with orders = the reference's RDP_ORDERS (isolates
             the bound itself) and "veilDefaults" with Veil's default orders
             (what Veil reports in production).

ddgauss_epsilon computes compute_rdp_dgaussian(..., steps, orders), i.e. the
one-round RDP vector times `steps`. To keep the full grid fast the script wraps
the module's compute_rdp_dgaussian with a cache of the one-round vector
(returning cached * steps, the same floating-point operation); the wrapper is
checked against uncached calls on --verify-uncached random points (default 24).

Prints one JSON object: {"points", "maxRelDiff" (sameOrders epsilon),
"comparisons": {sameOrders, veilDefaults, rdpOneRound}, "byRegime", "worst",
"referenceFloorOrders", "outsideGrid" (8 points with z in {3, 8} and
q in {0.01, 0.001}, informational), "reference": {files, sha256}, ...}.
Exit status 0 when the sameOrders epsilon and one-round RDP differences are
<= --tol (default 1e-9 relative) and the uncached check passes; 1 otherwise.
"""

import argparse
import hashlib
import importlib.util
import itertools
import json
import math
import multiprocessing
import os
import random
import subprocess
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NODE_HELPER = os.path.join(HERE, 'veil-ddg-grid.mjs')

BETA = math.exp(-0.5)
FULL_GRID = {
    'clip': [0.1, 1.0, 10.0],
    'scale': [2.0**6, 2.0**8, 2.0**10, 2.0**12],
    'dim': [2**10, 2**13, 2**16, 2**18],
    'clients': [10, 100, 1000],
    'z': [0.5, 1.0, 2.0],
    'q': [1.0, 0.5, 0.1, 0.01],
    'steps': [1, 10, 100, 1000],
    'delta': [1e-5, 1e-6],
}
QUICK_GRID = dict(FULL_GRID, clip=[1.0], dim=[2**10, 2**16], clients=[10, 1000])

_REF = None  # per-process reference module (accounting_utils)
_CACHE = {}


def _find(refdir, name):
  direct = os.path.join(refdir, name)
  if os.path.isfile(direct):
    return direct
  for root, _, files in os.walk(refdir):
    if name in files:
      return os.path.join(root, name)
  raise SystemExit(f'{name} not found under {refdir}; see docs/ddg-reference-check.md')


def _load_module(name, path):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def load_reference(refdir, cached=True):
  """Loads rdp_accountant.py, installs the tensorflow_privacy stand-in, loads accounting_utils.py."""
  rdp_path = _find(refdir, 'rdp_accountant.py')
  au_path = _find(refdir, 'accounting_utils.py')
  rdp = _load_module('ddgref_rdp_accountant', rdp_path)
  tfp = types.ModuleType('tensorflow_privacy')
  tfp.compute_rdp = rdp.compute_rdp
  tfp.get_privacy_spent = rdp.get_privacy_spent
  sys.modules['tensorflow_privacy'] = tfp
  au = _load_module('ddgref_accounting_utils', au_path)
  au._uncached_compute_rdp_dgaussian = au.compute_rdp_dgaussian
  if cached:
    original = au.compute_rdp_dgaussian

    def compute_rdp_dgaussian(q, l1_scale, l2_scale, tau, dim, steps, orders):
      key = (q, l1_scale, l2_scale, tau, dim, tuple(orders))
      one = _CACHE.get(key)
      if one is None:
        one = original(q, l1_scale, l2_scale, tau, dim, 1, orders)
        _CACHE[key] = one
      return one * steps

    au.compute_rdp_dgaussian = compute_rdp_dgaussian
  return au, {'accounting_utils.py': au_path, 'rdp_accountant.py': rdp_path}


def _init_worker(refdir):
  global _REF
  _REF, _ = load_reference(refdir)


def _combo_task(args):
  """Reference epsilons of one (c, scale, d, n, z, q) combination over all (steps, delta)."""
  (c, scale, dim, n, z, q), steps_list, deltas = args
  au = _REF
  sigma = z * c / math.sqrt(n)
  gamma = 1.0 / scale
  out = {}
  for t in steps_list:
    for delta in deltas:
      eps, order = au.ddgauss_epsilon(gamma, sigma, n, c, BETA, dim, q, t, delta)
      out[(t, delta)] = (float(eps), float(order))
  # One-round RDP at the reference orders, through the module's own pipeline:
  # every (steps, delta) of this combination used the same cache entry.
  assert len(_CACHE) == 1, f'expected one cached RDP vector, got {len(_CACHE)}'
  rdp1 = [float(x) for x in next(iter(_CACHE.values()))]
  descr = describe(au, c, scale, sigma, n, dim)
  _CACHE.clear()
  return (c, scale, dim, n, z, q), out, rdp1, descr


def describe(au, c, scale, sigma, n, dim):
  """Regime descriptors computed with the reference's own helpers."""
  scale_ref = 1.0 / ((1.0 / scale) + au.DIV_EPSILON)
  l2 = au.rounded_l2_norm_bound(c * scale_ref, BETA, dim)
  l1 = au.rounded_l1_norm_bound(l2, dim)
  tau = 0
  for k in range(1, n):
    tau += math.exp(-2 * (math.pi * sigma * scale_ref)**2 * (k / (k + 1)))
  tau *= 10
  s = math.sqrt(n) * sigma * scale_ref
  return {
      'sigmaZ': sigma * scale,
      'l2Rounded': float(l2),
      'l2Inflation': float(l2) / (c * scale),
      'l1Rounded': float(l1),
      'tau': tau,
      'tauTimesDim': tau * dim,
      'l2Scale': float(l2) / s,
  }


def rel_diff(a, b):
  """|a - b| / |b| with b the reference; inf/None handled."""
  if a is None and b is None:
    return 0.0
  if a is None or b is None:
    return math.inf
  if math.isinf(a) and math.isinf(b):
    return 0.0
  if a == b:
    return 0.0
  if b == 0:
    return math.inf
  return abs(a - b) / abs(b)


def run_veil(points, rdp_points, orders):
  payload = json.dumps({'orders': orders, 'epsilon': points, 'rdp': rdp_points})
  proc = subprocess.run(['node', NODE_HELPER], input=payload, capture_output=True, text=True, cwd=ROOT)
  if proc.returncode != 0:
    raise SystemExit(f'veil-ddg-grid.mjs failed ({proc.returncode}):\n{proc.stderr}')
  return json.loads(proc.stdout)


def fmt(x):
  if x is None:
    return None
  if isinstance(x, float) and (math.isinf(x) or math.isnan(x)):
    return str(x)
  return x


def summarize(rows, key):
  vals = [r[key] for r in rows]
  if not vals:
    return None
  finite = [v for v in vals if not math.isinf(v)]
  return {
      'points': len(vals),
      'maxRelDiff': fmt(max(vals)),
      'meanRelDiff': fmt(sum(finite) / len(finite)) if finite else None,
      'over1pct': sum(1 for v in vals if v > 0.01),
  }


def eps_band(e):
  if e < 1:
    return 'eps<1'
  if e < 10:
    return '1<=eps<10'
  if e < 100:
    return '10<=eps<100'
  return 'eps>=100'


def order_class(order):
  if order is None:
    return 'none'
  if order != int(order):
    return 'fractional(<11)'
  if order < 11:
    return 'integer 2..10'
  if order <= 63:
    return '11..63'
  if order < 128:
    return '64..127'
  return str(int(order))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('refdir')
  ap.add_argument('--quick', action='store_true', help='smaller grid (c=1, d in {2^10,2^16}, n in {10,1000})')
  ap.add_argument('--jobs', type=int, default=os.cpu_count() or 1)
  ap.add_argument('--verify-uncached', type=int, default=24)
  ap.add_argument('--worst', type=int, default=5)
  ap.add_argument('--tol', type=float, default=1e-9)
  ap.add_argument('--seed', type=int, default=1)
  args = ap.parse_args()

  t0 = time.time()
  grid = QUICK_GRID if args.quick else FULL_GRID
  au, paths = load_reference(args.refdir, cached=False)
  ref_orders = [int(o) for o in au.RDP_ORDERS]
  sha = {name: hashlib.sha256(open(p, 'rb').read()).hexdigest() for name, p in paths.items()}

  combos = list(itertools.product(grid['clip'], grid['scale'], grid['dim'], grid['clients'], grid['z'], grid['q']))
  tasks = [(cmb, grid['steps'], grid['delta']) for cmb in combos]
  # Most expensive (q < 1) first for better load balance.
  tasks.sort(key=lambda t: t[0][5] == 1.0)
  if args.jobs > 1:
    with multiprocessing.Pool(args.jobs, initializer=_init_worker, initargs=(args.refdir,)) as pool:
      results = pool.map(_combo_task, tasks, chunksize=4)
  else:
    _init_worker(args.refdir)
    results = [_combo_task(t) for t in tasks]
  t_ref = time.time() - t0

  points, meta = [], []
  rdp_points, rdp_meta = [], []
  for (c, scale, dim, n, z, q), out, rdp1, descr in results:
    sigma = z * c / math.sqrt(n)
    rdp_points.append([c, scale, sigma, n, dim, BETA, q, 1, 1e-5])
    rdp_meta.append(((c, scale, dim, n, z, q), rdp1, descr))
    for (t, delta), (eps, order) in out.items():
      points.append([c, scale, sigma, n, dim, BETA, q, t, delta])
      meta.append({'c': c, 'scale': scale, 'dim': dim, 'clients': n, 'z': z, 'q': q, 'steps': t,
                   'delta': delta, 'localStddev': sigma, 'ref': [eps, order], 'descr': descr})

  t1 = time.time()
  veil = run_veil(points, rdp_points, ref_orders)
  t_veil = time.time() - t1

  rows = []
  errors = []
  for m, v in zip(meta, veil['epsilon']):
    if 'error' in v:
      errors.append({'point': {k: m[k] for k in ('c', 'scale', 'dim', 'clients', 'z', 'q', 'steps', 'delta')},
                     'error': v['error']})
      continue
    ref_eps, ref_order = m['ref']
    same_eps, same_order = v['given']
    def_eps, def_order = v['default']
    rows.append(dict(m, veilSame=[same_eps, same_order], veilDefault=[def_eps, def_order],
                     dSame=rel_diff(same_eps, ref_eps), dDefault=rel_diff(def_eps, ref_eps),
                     signDefault=(0 if def_eps == ref_eps else (1 if def_eps is None or def_eps > ref_eps else -1))))

  rdp_rows = []
  for (cmb, rdp1, descr), vr in zip(rdp_meta, veil['rdp']):
    if rdp1 is None or isinstance(vr, dict):
      rdp_rows.append({'combo': cmb, 'd': math.inf, 'error': 'missing'})
      continue
    worst = max(range(len(rdp1)), key=lambda i: rel_diff(vr[i], rdp1[i]))
    rdp_rows.append({'combo': cmb, 'd': rel_diff(vr[worst], rdp1[worst]), 'order': ref_orders[worst],
                     'veil': vr[worst], 'ref': rdp1[worst]})

  # Uncached spot check of the cache wrapper: ddgauss_epsilon as fetched.
  rng = random.Random(args.seed)
  spot = rng.sample(rows, min(args.verify_uncached, len(rows)))
  spot_bad = []
  for r in spot:
    eps, order = au.ddgauss_epsilon(1.0 / r['scale'], r['localStddev'], r['clients'], r['c'], BETA, r['dim'],
                                    r['q'], r['steps'], r['delta'])
    if float(eps) != r['ref'][0] or float(order) != r['ref'][1]:
      spot_bad.append({'point': {k: r[k] for k in ('c', 'scale', 'dim', 'clients', 'z', 'q', 'steps', 'delta')},
                       'uncached': [float(eps), float(order)], 'cached': r['ref']})

  def point_view(r, which):
    v = r['veilSame'] if which == 'same' else r['veilDefault']
    return {
        'c': r['c'], 'scale': r['scale'], 'dim': r['dim'], 'clients': r['clients'], 'z': r['z'], 'q': r['q'],
        'steps': r['steps'], 'delta': r['delta'], 'localStddev': r['localStddev'],
        'refEps': r['ref'][0], 'refOrder': r['ref'][1], 'veilEps': v[0], 'veilOrder': v[1],
        'relDiff': fmt(r['dSame'] if which == 'same' else r['dDefault']),
        'tauTimesDim': r['descr']['tauTimesDim'], 'l2Inflation': r['descr']['l2Inflation'],
    }

  by_regime = {}
  for name, keyfn in (
      ('q', lambda r: f"q={r['q']}"),
      ('steps', lambda r: f"T={r['steps']}"),
      ('refEpsBand', lambda r: eps_band(r['ref'][0])),
      ('veilDefaultOrder', lambda r: order_class(r['veilDefault'][1])),
      ('refOrder', lambda r: order_class(r['ref'][1])),
      ('tauTimesDim', lambda r: 'tau*d<1e-6' if r['descr']['tauTimesDim'] < 1e-6 else
       ('tau*d<1' if r['descr']['tauTimesDim'] < 1 else 'tau*d>=1')),
  ):
    groups = {}
    for r in rows:
      groups.setdefault(keyfn(r), []).append(r)
    by_regime[name] = {
        k: {'sameOrders': summarize(g, 'dSame'), 'veilDefaults': summarize(g, 'dDefault'),
            'veilDefaultsHigher': sum(1 for r in g if r['signDefault'] > 0),
            'veilDefaultsLower': sum(1 for r in g if r['signDefault'] < 0)}
        for k, g in sorted(groups.items())
    }

  # Veil-defaults differences, signed: where is Veil looser / tighter?
  higher = [r for r in rows if r['signDefault'] > 0]
  lower = [r for r in rows if r['signDefault'] < 0]
  worst_same = sorted(rows, key=lambda r: r['dSame'], reverse=True)[:args.worst]
  worst_higher = sorted(higher, key=lambda r: r['dDefault'], reverse=True)[:args.worst]
  worst_lower = sorted(lower, key=lambda r: r['dDefault'], reverse=True)[:args.worst]
  max_same = max((r['dSame'] for r in rows), default=math.inf)
  max_rdp = max((r['d'] for r in rdp_rows), default=math.inf)
  order_mismatch = sum(1 for r in rows if r['veilSame'][1] != r['ref'][1])

  # Reference behaviour with non-integer orders (documented in compute_rdp_dgaussian:
  # "If provided orders are not integers, they are rounded down"): the RDP of
  # floor(alpha) is then converted as if it held at alpha.
  floor_demo = None
  try:
    demo_orders = [2.5, 3.5, 4.5, 8.5, 16.5, 32.5]
    e_frac, o_frac = au.ddgauss_epsilon(1 / 2**10, 1.0 / math.sqrt(100), 100, 1.0, BETA, 2**16, 1.0, 1, 1e-5,
                                        orders=demo_orders)
    e_int, o_int = au.ddgauss_epsilon(1 / 2**10, 1.0 / math.sqrt(100), 100, 1.0, BETA, 2**16, 1.0, 1, 1e-5,
                                      orders=[2, 3, 4, 8, 16, 32, 3, 4, 5, 9, 17, 33])
    v = run_veil([[1.0, 2.0**10, 1.0 / math.sqrt(100), 100, 2**16, BETA, 1.0, 1, 1e-5]], [], demo_orders)
    floor_demo = {'params': 'c=1, scale=2^10, z=1, n=100, d=2^16, q=1, T=1, delta=1e-5',
                  'orders': demo_orders, 'referenceEps': [float(e_frac), float(o_frac)],
                  'veilEps': v['epsilon'][0]['given'], 'referenceIntegerNeighbours': [float(e_int), float(o_int)]}
  except Exception as err:  # pragma: no cover - informational only
    floor_demo = {'error': repr(err)}

  # Outside the requested grid: larger z and smaller q, where the reference's
  # optimal order falls in 64..127 (absent from Veil's default orders) or
  # above 256 (absent from the reference's).
  outside = []
  extra_pts, extra_ref = [], []
  for z, q, t in itertools.product([3.0, 8.0], [0.01, 0.001], [1, 10]):
    c, scale, n, dim, delta = 1.0, 2.0**10, 100, 2**16, 1e-5
    sigma = z * c / math.sqrt(n)
    e, o = au.ddgauss_epsilon(1.0 / scale, sigma, n, c, BETA, dim, q, t, delta)
    extra_ref.append(({'c': c, 'scale': scale, 'dim': dim, 'clients': n, 'z': z, 'q': q, 'steps': t, 'delta': delta},
                      float(e), float(o)))
    extra_pts.append([c, scale, sigma, n, dim, BETA, q, t, delta])
  ve = run_veil(extra_pts, [], ref_orders)['epsilon']
  for (pt, e, o), v in zip(extra_ref, ve):
    outside.append(dict(pt, refEps=e, refOrder=o, veilSameOrders=v['given'], veilDefaults=v['default'],
                        relDiffDefaults=fmt(rel_diff(v['default'][0], e)),
                        relDiffSameOrders=fmt(rel_diff(v['given'][0], e))))

  result = {
      'points': len(rows),
      'grid': {k: v for k, v in grid.items()},
      'beta': BETA,
      'maxRelDiff': fmt(max_same),
      'comparisons': {
          'sameOrders': dict(summarize(rows, 'dSame') or {}, optimalOrderMismatches=order_mismatch),
          'rdpOneRound': {'combos': len(rdp_rows), 'maxRelDiff': fmt(max_rdp)},
          'veilDefaults': dict(summarize(rows, 'dDefault') or {},
                               veilHigher=len(higher), veilLower=len(lower),
                               veilEqual=len(rows) - len(higher) - len(lower),
                               maxRelDiffVeilHigher=fmt(max((r['dDefault'] for r in higher), default=0.0)),
                               maxRelDiffVeilLower=fmt(max((r['dDefault'] for r in lower), default=0.0))),
      },
      'byRegime': by_regime,
      'worst': {
          'sameOrders': [point_view(r, 'same') for r in worst_same],
          'veilDefaultsHigher': [point_view(r, 'default') for r in worst_higher],
          'veilDefaultsLower': [point_view(r, 'default') for r in worst_lower],
      },
      'errors': errors[:20],
      'errorCount': len(errors),
      'uncachedSpotCheck': {'points': len(spot), 'mismatches': spot_bad},
      'referenceFloorOrders': floor_demo,
      'outsideGrid': outside,
      'reference': {'files': {k: os.path.relpath(p) for k, p in paths.items()}, 'sha256': sha,
                    'orders': '2..128, 256'},
      'veilDefaultOrders': '1.1..10.9 step 0.1, 11..63, 128, 256, 512, 1024',
      'seconds': {'reference': round(t_ref, 1), 'veil': round(t_veil, 1)},
  }
  print(json.dumps(result, indent=1))
  ok = max_same <= args.tol and max_rdp <= args.tol and not spot_bad and not errors
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  main()
