#!/usr/bin/env python3
"""Reference epsilons for distributed DP in committee mode (issue 11, item 4).

Usage (from the repository root):

    python3 scripts/ddg-committee-reference.py REFDIR

REFDIR holds the authors' accounting files of docs/ddg-reference-check.md
(google-research/federated distributed_dp/accounting_utils.py @5e27a86 and
tensorflow/privacy rdp_accountant.py @385fefc), loaded as
scripts/check-ddg-reference.py loads them. Prints one JSON object: for each
point the tests use, the epsilon for observers of the released models
(Poisson-subsampled with q, `ddgauss_epsilon` as fetched, its integer orders
2..128 and 256) and the epsilon against the coordinator (no amplification,
q = 1).

The coordinator's epsilon is evaluated on Veil's order list (dp_accounting's
defaults plus every integer to 256), which has fractional orders that
`compute_rdp_dgaussian` would truncate with int(). For q = 1 its RDP is the
minimum of the three terms of KLS21 Proposition 14, transcribed below from
`compute_rdp_dgaussian`'s inner `eps(order)`; the transcription is checked
against the fetched function at every integer order first (exit status 1 if
they differ). Rounded norm bounds, tau and the RDP -> (eps, delta) conversion
are the fetched functions'.

Points (tests that use them):
  packages/server/test/committee-ledger.test.ts: C = 1, 1/gamma = 2^13, n = 2,
    sigma = 0.707106781187, d = 16, q = 1, T = 1, 2, delta = 1e-5
  packages/server/src/privacy/committee-dp.test.ts: C = 1, 1/gamma = 2^13,
    n = 8, sigma = 0.424264068712, d = 1024, q = 0.2, T = 1, 2, 3, delta = 1e-5
"""
import hashlib
import importlib.util
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location('check_ddg_reference', os.path.join(HERE, 'check-ddg-reference.py'))
_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_check)

BETA = math.exp(-0.5)
VEIL_ORDERS = sorted(set([1 + x / 10 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024] + list(range(2, 257))))
POINTS = [
  dict(c=1, scale=8192, n=2, sigma=0.707106781187, d=16, q=1, steps=t, delta=1e-5) for t in (1, 2)
] + [
  dict(c=1, scale=8192, n=8, sigma=0.424264068712, d=1024, q=0.2, steps=t, delta=1e-5) for t in (1, 2, 3)
]


def scales(au, c, scale, n, sigma, d):
  """l1_scale, l2_scale, tau exactly as ddgauss_epsilon computes them (rounding on)."""
  l2 = au.rounded_l2_norm_bound(c * scale, BETA, d) / scale
  l1 = au.rounded_l1_norm_bound(l2 * scale, d) / scale
  tau = 0
  for k in range(1, n):
    tau += math.exp(-2 * (math.pi * sigma * scale)**2 * (k / (k + 1)))
  tau *= 10
  return l1 / (np.sqrt(n) * sigma), l2 / (np.sqrt(n) * sigma), tau


def q1_rdp(l1_scale, l2_scale, tau, dim, order):
  """compute_rdp_dgaussian's eps(order) (KLS21 Prop. 14), without the int() cast."""
  term_1 = (order / 2.0) * l2_scale**2 + tau * dim
  term_2 = (order / 2.0) * (l2_scale**2 + 2 * l1_scale * tau + tau**2 * dim)
  term_3 = (order / 2.0) * (l2_scale + np.sqrt(dim) * tau)**2
  return min(term_1, term_2, term_3)


def main():
  if len(sys.argv) != 2:
    raise SystemExit(__doc__)
  au, files = _check.load_reference(sys.argv[1], cached=False)
  rdp_module = sys.modules['ddgref_rdp_accountant']
  out = []
  for p in POINTS:
    l1s, l2s, tau = scales(au, p['c'], p['scale'], p['n'], p['sigma'], p['d'])
    integer_orders = list(range(2, 257))
    fetched = au._uncached_compute_rdp_dgaussian(1, l1s, l2s, tau, p['d'], 1, integer_orders)
    mine = [q1_rdp(l1s, l2s, tau, p['d'], a) for a in integer_orders]
    if any(x != y for x, y in zip(fetched, mine)):
      print(json.dumps({'error': 'transcription differs from compute_rdp_dgaussian', 'point': p}))
      sys.exit(1)
    observers, observers_order = au.ddgauss_epsilon(1 / p['scale'], p['sigma'], p['n'], p['c'], BETA, p['d'], p['q'], p['steps'], p['delta'])
    rdp = np.array([q1_rdp(l1s, l2s, tau, p['d'], a) for a in VEIL_ORDERS]) * p['steps']
    coordinator, _, coordinator_order = rdp_module.get_privacy_spent(VEIL_ORDERS, rdp, target_delta=p['delta'])
    out.append({**p, 'observers': float(observers), 'observersOrder': int(observers_order), 'coordinator': float(coordinator), 'coordinatorOrder': float(coordinator_order)})
  sha = {name: hashlib.sha256(open(path, 'rb').read()).hexdigest() for name, path in files.items()}
  print(json.dumps({'points': out, 'reference': {'files': files, 'sha256': sha}}, indent=1))


if __name__ == '__main__':
  main()
