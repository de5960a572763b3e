"""The steps of the minimum-norm solvers, each written once for every network.

With ``u = log a``, F restricted to one free group ``g`` (its units do not feed one another) is
``sum_i r_i exp(p u_i) + s_i exp(-p u_i)`` with ``r_i = sum_j |W_ij|^p exp(-p u_j)`` over the units
feeding unit i and ``s_i = sum_j |W_ji|^p exp(p u_j)`` over those it feeds. Its exact minimiser is
:func:`exact_log_factor`; Algorithm 1 moves every free unit :func:`halfway` there at once (the
AM-GM bound of eq. 14 halves the step, eq. 12). The slow mode of deep networks, one common scale
per group, is minimised exactly by :func:`newton_shift`.

The steps drive a *state* (the chain's or the graph's, :mod:`._chain` and :mod:`._graph`), which
holds the log-factors and the matrix-vector products they need and offers:

- ``groups``: the free groups; ``colours``: classes of groups no block joins (each class may move
  to its exact minimiser at once); ``self_loops``: groups with a block into themselves (not
  separable: they take Algorithm 1's half step);
- ``target(g)``: the exact minimiser of F over group g given the others, in the state's form;
- ``move(g, target, half)``: go there, or :func:`halfway` there;
- ``refresh(groups)``: recompute the products that read these groups' factors;
- ``shift()``: the exact common shift of every group; ``snapshot()``, ``max_step(before)``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["exact_log_factor", "halfway", "newton_shift", "newton", "multiplicative_update", "multiplicative_step",
           "block_step", "enorm_sweep"]


def exact_log_factor(log_r, log_s, p: float):
    """The block minimiser of F over one group in logs: ``exp(2p u_i) = s_i / r_i``."""
    return (log_s - log_r) / (2 * p)


def halfway(u, target):
    """Algorithm 1's update (eq. 12): half the way from ``u`` to the exact minimiser."""
    return u + (target - u) / 2


def newton_shift(log_coeffs, dst, src, n: int, z0=None, *, tol: float = 1e-13, max_iter: int = 100,
                 polish: bool = False):
    """Minimise ``f(z) = sum_t exp(c_t + z[dst_t] - z[src_t])`` over ``z`` (``n`` entries; index
    ``-1`` stands for a fixed group, ``z = 0``): F restricted to one common log-scale per group.

    ``f`` is convex; where every free group is joined to a fixed one through terms, strictly.
    Newton's method with backtracking (Armijo, factor 1/4), from ``z0`` (default 0), the
    coefficients scaled by their largest so that ``f`` stays near 1; stops when the Newton
    decrement falls below ``tol f`` (with ``polish``, after one last full Newton step, kept if
    ``f`` does not rise: the decrement is quadratic in the error, so below ``tol f`` z may still
    be ~sqrt(tol) off). Returns ``z`` (float64)."""
    c = np.asarray(log_coeffs, dtype=np.float64)
    D, S = np.asarray(dst, dtype=np.int64), np.asarray(src, dtype=np.int64)
    A = np.exp(c - c.max())

    def evaluate(z):
        zz = np.concatenate([z, [0.0]])                      # index -1: a fixed group
        e = A * np.exp(zz[D] - zz[S])
        return e, float(e.sum())

    def direction(z, e):
        grad = np.zeros(n + 1)
        np.add.at(grad, D, e)
        np.add.at(grad, S, -e)
        H = np.zeros((n + 1, n + 1))
        np.add.at(H, (D, D), e)
        np.add.at(H, (S, S), e)
        np.add.at(H, (D, S), -e)
        np.add.at(H, (S, D), -e)
        g, H = grad[:n], H[:n, :n]
        try:        # a group joined to nothing fixed has a zero mode: the tiny ridge picks z = 0 there
            step = np.linalg.solve(H + 1e-14 * np.trace(H) * np.eye(n), -g)
        except np.linalg.LinAlgError:
            return None
        return step, -g @ step

    z = np.zeros(n) if z0 is None else np.asarray(z0, dtype=np.float64).copy()
    return newton(evaluate, direction, z, tol=tol, max_iter=max_iter, polish=polish)


def newton(evaluate, direction, z, *, tol: float, max_iter: int, trust_below: float = 0.0,
           polish: bool = False):
    """Newton's method with backtracking (Armijo, factor 1/4, steps halved), written once for every
    convex minimisation of the solvers: ``evaluate(z) -> (state, f)``, ``direction(z, state) ->
    (step, decrement)`` (``decrement = -grad . step``) or None when no step can be formed. Stops
    when the decrement falls below ``tol f``, when no step decreases ``f``, or after ``max_iter``
    steps; returns ``z``. ``trust_below > 0``: a step whose decrement is below ``trust_below f``
    (where Newton converges quadratically and the decrease ``~ dec`` is lost in the rounding of
    ``f``) is taken whole, without the test of decrease. ``polish``: at the stop, one last full
    Newton step, kept if ``f`` does not rise."""
    e, f = evaluate(z)
    for _ in range(max_iter):
        d = direction(z, e)
        if d is None:
            break
        step, dec = d
        dec = float(dec)
        if not dec > tol * f:
            if not polish:
                break
            # The decrement is quadratic in the distance to the minimiser: below tol f, z may still
            # be ~sqrt(tol) off (1e-8 at a dead unit's layer, which the block method's sweeps then
            # repeat forever: gamma stuck near 1e-9 at p = 1). One more full Newton step, kept if
            # it does not raise f, makes that error quadratically small.
            trial = z + step
            et, ft = evaluate(trial)
            if ft <= f:
                z = trial
            break
        if dec < trust_below * f:
            z = z + step
            e, f = evaluate(z)
            continue
        t = 1.0
        while True:                                          # backtracking keeps f decreasing
            trial = z + t * step
            et, ft = evaluate(trial)
            if ft <= f - 0.25 * t * dec or t < 1e-10:
                break
            t *= 0.5
        if not ft < f:
            break
        z, e, f = trial, et, ft
    return z


def multiplicative_update(st):
    """Algorithm 1: every free group halfway to its exact minimiser at once; the products are left
    stale (the caller refreshes them if it goes on). Returns ``max_i |a_i - 1|`` of the move."""
    before = st.snapshot()
    targets = [(g, st.target(g)) for g in st.groups]        # all from the same products
    for g, target in targets:
        st.move(g, target, half=True)
    return st.max_step(before)


def multiplicative_step(st):
    """:func:`multiplicative_update`, then the products at the new factors."""
    step = multiplicative_update(st)
    st.refresh(st.groups)
    return step


def block_step(st):
    """One sweep of the exact block method: the common shift, then colour by colour every group of
    the colour to its exact minimiser (Algorithm 1's half step for a group with a self loop); after
    each colour only the products that read it are recomputed."""
    before = st.snapshot()
    st.shift()
    for colour in st.colours:
        targets = [(g, st.target(g)) for g in colour]
        for g, target in targets:
            st.move(g, target, half=g in st.self_loops)
        st.refresh(colour)
    return st.max_step(before)


def enorm_sweep(st):
    """One ENorm-style sweep (Stock et al., 2019, Sec. 3): the free groups one after another in
    graph order, each to its exact minimiser given the others (Gauss-Seidel), no shift step."""
    before = st.snapshot()
    for g in st.groups:
        st.move(g, st.target(g), half=g in st.self_loops)
        st.refresh([g])
    return st.max_step(before)
