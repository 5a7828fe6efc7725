#!/usr/bin/env python3
"""Checks Veil's RDP accountant against Google's dp_accounting (issue #4).

Usage (from the repository root, after `npx tsc -b packages/cli`):

    python3 scripts/check-accountant-reference.py REF/rdp_privacy_accountant.py \
        [--signed-frac REF/rdp.py] [--integration] [--dense] [--cli-samples N]

REF/rdp_privacy_accountant.py is dp_accounting's RDP accountant source file
(python/dp_accounting/dp_accounting/rdp/rdp_privacy_accountant.py in
google/differential-privacy), fetched by the reviewer; it is NOT part of this
repository. See docs/privacy-reference-check.md for where to get it.

The reference epsilon of T rounds of the Poisson-subsampled Gaussian
mechanism is what dp_accounting's RdpAccountant returns for
SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(z)), T) with the
default orders: T * _compute_rdp_poisson_subsampled_gaussian(q, z, orders)
converted by compute_epsilon(orders, rdp, delta). The reference module is run
as fetched; only the imports it cannot satisfy outside its package (absl,
dp_accounting.dp_event, dp_accounting.privacy_accountant) are replaced by
small stand-ins when they are not installed.

Variants of the reference (each prints its own figures):
  asFetched     dp_accounting as fetched.
  signedSeries  same, with _compute_log_a_frac replaced by the signed series
                of TF Privacy (`_compute_log_a_frac`) or Opacus
                (`_compute_log_a_for_frac_alpha`), taken from the file given
                with --signed-frac (tensorflow_privacy/privacy/analysis/
                rdp_accountant.py or opacus/accountants/analysis/rdp.py).
  integration   same, with _compute_log_a_frac replaced by adaptive numerical
                integration (scipy.integrate.quad) of
                A_a - 1 = E_{x~N(0,z^2)}[(1+u)^a - 1 - a*u],  u = q*expm1((2x-1)/(2z^2)),
                whose integrand is >= 0 (so no cancellation); --integration.
Some dp_accounting releases sum the fractional-order series without its
signs, which overstates A_a at some (q, z, a); the "primary" comparison
(top-level maxRelDiff/worst/calibrate) uses the first exact variant
available: signedSeries, then integration, else asFetched.

Veil's numbers come from scripts/veil-epsilon-grid.mjs (the library behind
`veil privacy epsilon|calibrate`); --cli-samples N also runs the real CLI on N
grid points and checks it prints exactly the library's numbers.

Prints one JSON object: {"points":N,"maxRelDiff":...,"worst":{...},
"calibrate":{...},"variants":{...},"cli":{...},"reference":{...}}.
Exit status 0 when the primary epsilon difference is <= 1%, calibrate <= 0.5%
and Veil's z always meets the target under the reference; 1 otherwise.
"""

import argparse
import enum
import hashlib
import importlib.util
import json
import logging
import math
import os
import random
import subprocess
import sys
import time
import types
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
GRID_MJS = REPO / 'scripts' / 'veil-epsilon-grid.mjs'
CLI_JS = REPO / 'packages' / 'cli' / 'bin' / 'veil.js'

BASE_GRID = {
    'q': [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 0.9, 1.0],
    'z': [0.5, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0, 4.0],
    'T': [1, 2, 5, 10, 100, 1000, 10000],
    'delta': [1e-5, 1e-6],
}
DENSE_GRID = {
    'q': sorted(set(BASE_GRID['q'] + [0.003, 0.03, 0.07, 0.15, 0.3, 0.4, 0.6, 0.7, 0.8, 0.95, 0.99])),
    'z': sorted(set(BASE_GRID['z'] + [round(0.5 + 0.1 * k, 1) for k in range(36)])),
    'T': [1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000],
    'delta': [1e-5, 1e-6],
}
CALIBRATE_GRID = {
    'epsilon': [0.5, 1.0, 2.0, 4.0, 8.0],
    'delta': [1e-5, 1e-6],
    'q': [0.001, 0.01, 0.1, 0.5, 1.0],
    'T': [1, 10, 100, 1000, 10000],
}
# Veil's calibrate searches z in [0.01, 1e6]; the reference search uses the same range.
CAL_MIN_Z, CAL_MAX_Z = 0.01, 1e6
CAL_REL_TOL = 1e-6

EPS_LIMIT = 0.01
CAL_LIMIT = 0.005


# ---------------------------------------------------------------- reference loading

def _install_stand_ins():
  """Provides absl.logging and dp_accounting's base modules if not installed."""
  try:
    import absl.logging  # noqa: F401
  except ImportError:
    absl = types.ModuleType('absl')
    absl.logging = logging.getLogger('dp_accounting')
    sys.modules['absl'] = absl
    sys.modules['absl.logging'] = absl.logging
  try:
    from dp_accounting import dp_event, privacy_accountant  # noqa: F401
    return
  except ImportError:
    pass

  pkg = types.ModuleType('dp_accounting')
  pkg.__path__ = []
  dp_event = types.ModuleType('dp_accounting.dp_event')

  class DpEvent:
    pass

  classes = {'DpEvent': DpEvent}

  def event_class(name):  # any dp_event.XxxDpEvent the module mentions
    if name.startswith('__'):
      raise AttributeError(name)
    if name not in classes:
      classes[name] = type(name, (DpEvent,), {})
    return classes[name]

  dp_event.DpEvent = DpEvent
  dp_event.__getattr__ = event_class

  privacy_accountant = types.ModuleType('dp_accounting.privacy_accountant')

  class NeighboringRelation(enum.Enum):
    ADD_OR_REMOVE_ONE = 1
    REPLACE_ONE = 2
    REPLACE_SPECIAL = 3

  class PrivacyAccountant:

    class CompositionErrorDetails:

      def __init__(self, invalid_event=None, error_message=None):
        self.invalid_event = invalid_event
        self.error_message = error_message

    def __init__(self, neighboring_relation):
      self._neighboring_relation = neighboring_relation

  privacy_accountant.NeighboringRelation = NeighboringRelation
  privacy_accountant.PrivacyAccountant = PrivacyAccountant
  pkg.dp_event = dp_event
  pkg.privacy_accountant = privacy_accountant
  sys.modules['dp_accounting'] = pkg
  sys.modules['dp_accounting.dp_event'] = dp_event
  sys.modules['dp_accounting.privacy_accountant'] = privacy_accountant


def _load_module(path, name):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _sha256(path):
  return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# Loaded once per process (ProcessPoolExecutor workers load them in the initializer).
REF = None
SIGNED_FRAC = None
ORIGINAL_FRAC = None


def _init(ref_path, signed_path):
  global REF, SIGNED_FRAC, ORIGINAL_FRAC
  logging.getLogger('dp_accounting').setLevel(logging.ERROR)
  _install_stand_ins()
  REF = _load_module(ref_path, 'reference_rdp_privacy_accountant')
  ORIGINAL_FRAC = REF._compute_log_a_frac
  if signed_path:
    if 'six' not in sys.modules:
      try:
        import six  # noqa: F401  (TF Privacy's file imports it)
      except ImportError:
        six = types.ModuleType('six')
        six.integer_types = (int,)
        sys.modules['six'] = six
    other = _load_module(signed_path, 'reference_signed_series')
    SIGNED_FRAC = getattr(other, '_compute_log_a_frac', None) or getattr(
        other, '_compute_log_a_for_frac_alpha', None)
    if SIGNED_FRAC is None:
      raise SystemExit(f'{signed_path}: no _compute_log_a_frac / _compute_log_a_for_frac_alpha')


def _reference_orders():
  return [float(a) for a in REF.DEFAULT_RDP_ORDERS]


def _compute_epsilon(orders, rdp, delta):
  fn = getattr(REF, 'compute_epsilon', None) or getattr(REF, '_compute_epsilon')
  eps, order = fn(orders, rdp, delta)
  return float(eps), float(order)


# ---------------------------------------------------------------- exact fractional orders

def _binomial_series_tail(alpha, u):
  """(1+u)^a - 1 - a*u for |u| < 0.01, by its binomial series (k >= 2)."""
  total = 0.0
  coef = alpha  # binom(alpha, 1)
  power = u
  for k in range(2, 60):
    coef *= (alpha - k + 1) / k
    power *= u
    term = coef * power
    total += term
    if abs(term) <= 1e-18 * abs(total):
      break
  return total


def log_a_frac_by_integration(q, sigma, alpha):
  """log(A_alpha) by adaptive quadrature of a non-negative integrand (0 < q < 1)."""
  from scipy import integrate

  s2 = sigma * sigma
  log_norm = -0.5 * math.log(2 * math.pi * s2)

  def log_g(x):  # log((1+u)^a - 1 - a u), u = q expm1((2x-1)/(2 s2)) >= -q
    ell = (2 * x - 1) / (2 * s2)
    if ell > 700:
      # u ~ q e^ell: (1+u)^a dominates; a log1p(u) ~ a (log q + ell + log1p(...)).
      log_u = math.log(q) + ell + math.log1p(-math.exp(-ell))
      log1p_u = log_u + math.log1p(math.exp(-log_u))
      return alpha * log1p_u
    u = q * math.expm1(ell)
    if abs(u) < 0.01:
      g = _binomial_series_tail(alpha, u)
      return math.log(g) if g > 0 else -math.inf
    w = alpha * math.log1p(u)
    if w > 50:
      return w + math.log1p(-math.exp(-w) * (1 + alpha * u))
    g = math.expm1(w) - alpha * u
    return math.log(g) if g > 0 else -math.inf

  def log_integrand(x):
    return log_norm - x * x / (2 * s2) + log_g(x)

  # The integrand peaks near x = 0 (small-u part) and near x = alpha (the
  # (q e^ell)^alpha part); take the scale from a coarse scan.
  lo, hi = -40 * sigma, alpha + 40 * sigma
  xs = np.linspace(lo, hi, 4001)
  vals = np.array([log_integrand(x) for x in xs])
  scale = float(np.max(vals[np.isfinite(vals)]))
  peak = float(xs[int(np.argmax(np.where(np.isfinite(vals), vals, -np.inf)))])
  points = sorted({lo, -10 * sigma, 0.0, 0.5, min(max(peak, lo), hi), alpha, alpha + 10 * sigma, hi})

  def f(x):
    v = log_integrand(x) - scale
    return math.exp(v) if v > -745 else 0.0

  total = 0.0
  edges = [-math.inf] + points + [math.inf]
  for a, b in zip(edges[:-1], edges[1:]):
    if a == b:
      continue
    val, _ = integrate.quad(f, a, b, epsabs=0.0, epsrel=1e-13, limit=500)
    total += val
  log_a_minus_1 = scale + math.log(total)
  # log(A) = log1p(A - 1)
  if log_a_minus_1 > 30:
    return log_a_minus_1 + math.log1p(math.exp(-log_a_minus_1))
  return math.log1p(math.exp(log_a_minus_1))


def _frac_for(variant):
  if variant == 'asFetched':
    return ORIGINAL_FRAC
  if variant == 'signedSeries':
    return SIGNED_FRAC
  if variant == 'integration':
    return log_a_frac_by_integration
  raise ValueError(variant)


def _rdp_one_round(task):
  """Reference RDP of one round at every default order, for one variant."""
  variant, q, z = task
  REF._compute_log_a_frac = _frac_for(variant)
  errors = []
  try:
    orders = _reference_orders()
    out = []
    for a in orders:  # one order at a time so that one failure is contained
      try:
        out.append(float(REF._compute_rdp_poisson_subsampled_gaussian(q, z, [a])[0]))
      except Exception as err:  # e.g. TF Privacy's _log_sub raising ValueError
        errors.append({'order': a, 'error': repr(err)})
        out.append(math.inf)
    return out, errors
  finally:
    REF._compute_log_a_frac = ORIGINAL_FRAC


def _reference_epsilon_at(variant, q, z, rounds, delta):
  rdp, _ = _rdp_one_round((variant, q, z))
  return _compute_epsilon(_reference_orders(), [rounds * r for r in rdp], delta)


def _reference_calibrate(task):
  """Smallest z in [CAL_MIN_Z, CAL_MAX_Z] with reference eps(z) <= target (to CAL_REL_TOL)."""
  variant, target, delta, q, rounds, start = task
  cache = {}

  def eps(z):
    if z not in cache:
      cache[z] = _reference_epsilon_at(variant, q, z, rounds, delta)[0]
    return cache[z]

  start = min(max(start, CAL_MIN_Z), CAL_MAX_Z)
  lo, hi = start / 1.001, start * 1.001
  while eps(hi) > target:
    lo, hi = hi, hi * 2
    if hi > CAL_MAX_Z:
      return {'z': None, 'note': 'unreachable'}
  while lo > CAL_MIN_Z and eps(lo) <= target:
    hi, lo = lo, lo / 2
  if lo <= CAL_MIN_Z and eps(CAL_MIN_Z) <= target:
    return {'z': CAL_MIN_Z, 'note': 'at minimum z'}
  lo = max(lo, CAL_MIN_Z)
  while hi / lo - 1 > CAL_REL_TOL:
    mid = math.sqrt(lo * hi)
    if eps(mid) <= target:
      hi = mid
    else:
      lo = mid
  return {'z': hi, 'epsilonAtZ': eps(hi)}


# ---------------------------------------------------------------- Veil side

def run_veil(payload, node):
  proc = subprocess.run([node, str(GRID_MJS)], input=json.dumps(payload), capture_output=True,
                        text=True, check=False, cwd=REPO)
  if proc.returncode != 0:
    raise SystemExit(f'veil-epsilon-grid.mjs failed:\n{proc.stderr}')
  return json.loads(proc.stdout)


def run_cli(node, args):
  proc = subprocess.run([node, str(CLI_JS), 'privacy', *args, '--json'], capture_output=True,
                        text=True, check=False, cwd=REPO)
  if proc.returncode != 0:
    return {'error': proc.stderr.strip()}
  return json.loads(proc.stdout)


# ---------------------------------------------------------------- comparison

def rel_diff(veil, ref):
  if veil is None or ref is None or not math.isfinite(ref) or not math.isfinite(veil):
    return 0.0 if veil == ref or (veil is None and ref is not None and math.isinf(ref)) else math.inf
  if ref == 0:
    return 0.0 if veil == 0 else math.inf
  return abs(veil - ref) / abs(ref)


def summarise(rows, top):
  rows = sorted(rows, key=lambda r: -r['relDiff'])
  over = [r for r in rows if r['relDiff'] > EPS_LIMIT]
  return {
      'points': len(rows),
      'maxRelDiff': rows[0]['relDiff'] if rows else None,
      'pointsOver1pct': len(over),
      'pointsOver1pctWhereReferenceIsLarger': sum(
          1 for r in over if r.get('refEpsilon') is not None and r.get('veilEpsilon') is not None
          and r['refEpsilon'] > r['veilEpsilon']),
      'worst': rows[0] if rows else None,
      'top': rows[:top],
  }


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('reference', help="path to dp_accounting's rdp_privacy_accountant.py")
  ap.add_argument('--signed-frac', help="TF Privacy's rdp_accountant.py or Opacus' rdp.py")
  ap.add_argument('--integration', action='store_true', help='also run the numerical-integration variant')
  ap.add_argument('--dense', action='store_true', help='denser epsilon grid (the integration variant '
                  'still runs on the base grid)')
  ap.add_argument('--no-calibrate', action='store_true')
  ap.add_argument('--calibrate-all', action='store_true',
                  help='calibrate against every series variant (default: the primary one only; slow)')
  ap.add_argument('--cli-samples', type=int, default=12, help='real CLI invocations to cross-check (default 12)')
  ap.add_argument('--top', type=int, default=8, help='worst points listed per variant (default 8)')
  ap.add_argument('--jobs', type=int, default=os.cpu_count() or 1)
  ap.add_argument('--node', default='node')
  args = ap.parse_args()

  started = time.time()
  ref_path = str(Path(args.reference).resolve())
  signed_path = str(Path(args.signed_frac).resolve()) if args.signed_frac else None
  _init(ref_path, signed_path)
  orders = _reference_orders()

  variants = ['asFetched'] + (['signedSeries'] if signed_path else []) + (['integration'] if args.integration else [])
  grid = DENSE_GRID if args.dense else BASE_GRID
  pairs = [(q, z) for q in grid['q'] for z in grid['z']]
  base_pairs = {(q, z) for q in BASE_GRID['q'] for z in BASE_GRID['z']}

  # Reference RDP vectors (one round) for every (variant, q, z).
  tasks = [(v, q, z) for v in variants for (q, z) in pairs if v != 'integration' or (q, z) in base_pairs]
  with ProcessPoolExecutor(max_workers=args.jobs, initializer=_init, initargs=(ref_path, signed_path)) as pool:
    results = list(pool.map(_rdp_one_round, tasks, chunksize=4))
  ref_rdp = {t: r[0] for t, r in zip(tasks, results)}
  ref_errors = {v: [] for v in variants}
  for t, r in zip(tasks, results):
    for e in r[1]:
      ref_errors[t[0]].append({'q': t[1], 'z': t[2], **e})

  # Veil: epsilon at every grid point, plus one-round RDP vectors.
  points = [(q, z, T, d) for (q, z) in pairs for T in grid['T'] for d in grid['delta']]
  veil = run_veil({'epsilon': [list(p) for p in points], 'rdp': [list(p) for p in pairs]}, args.node)
  if [float(a) for a in veil['orders']] != orders:
    raise SystemExit("Veil's default orders differ from the reference's DEFAULT_RDP_ORDERS")
  veil_rdp = {p: r for p, r in zip(pairs, veil['rdp'])}

  report_variants = {}
  for v in variants:
    rows = []
    for (q, z, T, d), ve in zip(points, veil['epsilon']):
      if (v, q, z) not in ref_rdp:
        continue
      if isinstance(ve, dict):
        rows.append({'q': q, 'z': z, 'T': T, 'delta': d, 'veil': ve, 'ref': None, 'relDiff': math.inf})
        continue
      rdp = [T * r for r in ref_rdp[(v, q, z)]]
      eps, order = _compute_epsilon(orders, rdp, d)
      rows.append({'q': q, 'z': z, 'T': T, 'delta': d, 'veilEpsilon': ve[0], 'veilOrder': ve[1],
                   'refEpsilon': eps, 'refOrder': order, 'relDiff': rel_diff(ve[0], eps)})
    summary = summarise(rows, args.top)
    # Per-order RDP difference (one round), fractional and integer orders apart.
    worst_frac = worst_int = (0.0, None)
    for (q, z) in pairs:
      if (v, q, z) not in ref_rdp or isinstance(veil_rdp[(q, z)], dict):
        continue
      for a, rv, rr in zip(orders, veil_rdp[(q, z)], ref_rdp[(v, q, z)]):
        rv = math.inf if rv is None else rv
        d = rel_diff(rv, rr)
        slot = worst_int if float(a).is_integer() else worst_frac
        if d > slot[0] or slot[1] is None:
          slot = (d, {'q': q, 'z': z, 'order': a, 'veilRdp': rv, 'refRdp': rr, 'relDiff': d})
        if float(a).is_integer():
          worst_int = slot
        else:
          worst_frac = slot
    summary['rdpWorstFractionalOrder'] = worst_frac[1]
    summary['rdpWorstIntegerOrder'] = worst_int[1]
    summary['referenceErrors'] = {'count': len(ref_errors[v]), 'first': ref_errors[v][:5]}
    summary['referenceInfiniteRdpOrders'] = sum(
        1 for (vv, q, z), vec in ref_rdp.items() if vv == v and q < 1
        for a, r in zip(orders, vec) if not math.isfinite(r))
    report_variants[v] = summary

  primary = next((v for v in ('signedSeries', 'integration') if v in variants), 'asFetched')

  # Calibrate.
  calibrate = None
  if not args.no_calibrate:
    cases = [(e, d, q, T) for e in CALIBRATE_GRID['epsilon'] for d in CALIBRATE_GRID['delta']
             for q in CALIBRATE_GRID['q'] for T in CALIBRATE_GRID['T']]
    veil_cal = run_veil({'calibrate': [list(c) for c in cases]}, args.node)['calibrate']
    cal_variants = [v for v in variants if v != 'integration' and (args.calibrate_all or v == primary)]
    if not cal_variants:  # the integration variant alone: too slow to bisect over, use as fetched
      cal_variants = ['asFetched']
    calibrate = {'cases': len(cases), 'variants': {}}
    for v in cal_variants:
      cal_tasks = []
      for (e, d, q, T), vc in zip(cases, veil_cal):
        start = vc[0] if isinstance(vc, list) and vc[0] else 1.0
        cal_tasks.append((v, e, d, q, T, start))
      # Reference epsilon at Veil's z (must be <= target).
      at_veil_tasks = [(v, vc[0], q, T, d) for (e, d, q, T), vc in zip(cases, veil_cal) if isinstance(vc, list)]
      with ProcessPoolExecutor(max_workers=args.jobs, initializer=_init, initargs=(ref_path, signed_path)) as pool:
        ref_cal = list(pool.map(_reference_calibrate, cal_tasks, chunksize=2))
        at_veil = list(pool.map(_eps_task, at_veil_tasks, chunksize=4))
      rows = []
      misses = []
      at_iter = iter(at_veil)
      for (e, d, q, T), vc, rc in zip(cases, veil_cal, ref_cal):
        row = {'targetEpsilon': e, 'delta': d, 'q': q, 'T': T}
        if not isinstance(vc, list):
          row.update({'veil': vc, 'ref': rc, 'relDiff': math.inf if rc.get('z') else 0.0})
          rows.append(row)
          continue
        ref_eps_at_veil = next(at_iter)
        row.update({'veilZ': vc[0], 'veilEpsilonAtZ': vc[1], 'refZ': rc.get('z'), 'refNote': rc.get('note'),
                    'refEpsilonAtVeilZ': ref_eps_at_veil,
                    'relDiff': rel_diff(vc[0], rc.get('z')) if rc.get('z') else math.inf})
        if ref_eps_at_veil > e:
          misses.append(row)
        rows.append(row)
      rows.sort(key=lambda r: -r['relDiff'])
      margin = max(((r['refEpsilonAtVeilZ'] - r['targetEpsilon']) / r['targetEpsilon'])
                   for r in rows if 'refEpsilonAtVeilZ' in r)
      calibrate['variants'][v] = {
          'maxRelDiff': rows[0]['relDiff'],
          'casesOver0.5pct': sum(1 for r in rows if r['relDiff'] > CAL_LIMIT),
          'worst': rows[0],
          'top': rows[:args.top],
          'refEpsilonAtVeilZAboveTarget': len(misses),
          'maxRelExcessOfRefEpsilonAtVeilZ': margin,
          'misses': misses[:args.top],
      }
    pv = primary if primary in calibrate['variants'] else 'asFetched'
    calibrate.update({'variant': pv, 'maxRelDiff': calibrate['variants'][pv]['maxRelDiff'],
                      'worst': calibrate['variants'][pv]['worst'],
                      'refEpsilonAtVeilZAboveTarget': calibrate['variants'][pv]['refEpsilonAtVeilZAboveTarget']})

  # Real CLI invocations on a sample of points: must print the library's numbers.
  cli = {'samples': 0, 'mismatches': []}
  rng = random.Random(4)
  for idx in rng.sample(range(len(points)), min(args.cli_samples, len(points))):
    q, z, T, d = points[idx]
    got = run_cli(args.node, ['epsilon', '--sampling-rate', repr(q), '--noise-multiplier', repr(z),
                              '--rounds', str(T), '--delta', repr(d)])
    want = veil['epsilon'][idx]
    cli['samples'] += 1
    if not isinstance(want, list) or got != {'epsilon': want[0], 'order': want[1]}:
      cli['mismatches'].append({'point': [q, z, T, d], 'cli': got, 'library': want})
  if not args.no_calibrate:
    for idx in rng.sample(range(len(cases)), min(max(args.cli_samples // 3, 1), len(cases))):
      e, d, q, T = cases[idx]
      got = run_cli(args.node, ['calibrate', '--target-epsilon', repr(e), '--delta', repr(d),
                                '--sampling-rate', repr(q), '--rounds', str(T)])
      want = veil_cal[idx]
      cli['samples'] += 1
      if not isinstance(want, list) or got != {'noiseMultiplier': want[0]}:
        cli['mismatches'].append({'case': [e, d, q, T], 'cli': got, 'library': want})

  prim = report_variants[primary]
  out = {
      'points': prim['points'],
      'maxRelDiff': prim['maxRelDiff'],
      'worst': prim['worst'],
      'primaryVariant': primary,
      'calibrate': calibrate,
      'variants': report_variants,
      'cli': cli,
      'grid': grid if not args.integration else {'epsilon': grid, 'integrationVariant': BASE_GRID},
      'reference': {'path': ref_path, 'sha256': _sha256(ref_path),
                    'signedFrac': signed_path and {'path': signed_path, 'sha256': _sha256(signed_path)}},
      'seconds': round(time.time() - started, 1),
  }
  print(json.dumps(_finite(out), indent=1, default=_json_default, allow_nan=False))
  ok = (prim['maxRelDiff'] <= EPS_LIMIT and not cli['mismatches'] and
        (calibrate is None or (calibrate['maxRelDiff'] <= CAL_LIMIT and calibrate['refEpsilonAtVeilZAboveTarget'] == 0)))
  return 0 if ok else 1


def _eps_task(task):
  v, z, q, T, d = task
  return _reference_epsilon_at(v, q, z, T, d)[0]


def _finite(x):
  """Strict JSON: non-finite floats become the strings "inf" / "-inf" / "nan"."""
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite(v) for v in x]
  if isinstance(x, (float, np.floating)) and not math.isfinite(x):
    return 'nan' if math.isnan(x) else ('inf' if x > 0 else '-inf')
  return x


def _json_default(x):
  if isinstance(x, (np.floating,)):
    return float(x)
  if isinstance(x, (np.integer,)):
    return int(x)
  raise TypeError(type(x))


if __name__ == '__main__':
  sys.exit(main())
