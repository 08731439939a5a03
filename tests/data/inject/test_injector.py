"""The injector against the generator's own numpy path (data.sim.physics), the SNR it
injects against the whitened energy, and what each kind of injected sample holds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from data.inject import projection
from data.inject.bank import BankSpec, draw_sources, make_bank, open_bank
from data.inject.injector import Injector, Sources, batch_generator, mass_weights, psd_on_grid
from data.inject.snr import SNRPrior
from data.sim import physics
from preprocess.config import load_preset
from preprocess.transforms import Whiten


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    path = tmp_path_factory.mktemp("bank") / "bank.zarr"
    make_bank(path, BankSpec(n=32, seed=1, chunk_size=16), progress=False)
    return open_bank(path)


@pytest.fixture(scope="module")
def whiten():
    return Whiten.from_config(load_preset("default").whiten, physics.noise_psd())


@pytest.mark.parametrize("merger_time", [1.9, 1.55, 1.3])
def test_a_bank_row_projects_to_the_generators_signal(bank, whiten, merger_time):
    """The same source, sky, polarisation and merger time through the bank and the torch
    projection, and through the generator's numpy path (lalsimulation's waveform, lal's
    antenna patterns and delays, data.sim.physics.project_waveform): the same strain, and the
    same whitened strain, to float32 precision."""
    sources = draw_sources(BankSpec(n=32, seed=1, chunk_size=16), 0)
    detectors = projection.Detectors.from_lal()
    gmst = projection.gmst(physics.GPS_REFERENCE)
    for i, (ra, dec, psi) in enumerate([(0.3, -0.9, 2.0), (4.0, 0.5, 0.1), (2.2, 1.3, 1.1)]):
        s = dataclasses.replace(sources[i], ra=ra, dec=dec, psi=psi)
        hp, hc, t_first = physics.polarisations(s)  # the bank's start frequency (1.9 s)
        fp, fc, delay = physics.antenna_patterns(ra, dec, psi)
        want = physics.project_waveform(hp, hc, (merger_time + t_first) * 2048, 4096, fp, fc,
                                        delay)
        one = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
        fpt, fct = projection.antenna_patterns(one(ra), one(dec), one(psi), gmst, detectors)
        dt = projection.geocentre_delays(one(ra), one(dec), gmst, detectors)
        first = torch.tensor([merger_time * 2048 - bank.merger_index - bank.merger_offset[i]])
        pol = torch.from_numpy(bank.polarisations[i:i + 1])
        got = projection.project(pol[:, 0], pol[:, 1], first, 4096, fpt.float(), fct.float(),
                                 dt.float())[0].double().numpy()
        scale = np.abs(want).max()
        assert np.abs(got - want).max() < 2e-6 * scale
        w_want = whiten(torch.from_numpy(want)[None])[0].numpy()
        w_got = whiten(torch.from_numpy(got)[None])[0].numpy()
        assert np.abs(w_got - w_want).max() < 2e-6 * np.abs(w_want).max()


def test_injected_snr_is_the_whitened_energy(bank, whiten):
    """Whitened to unit-variance noise, a signal of optimal SNR rho has energy sum w^2 ~ rho^2
    (the window and the band edges take a few per cent); and the SNR it was scaled to,
    measured again with the generator's numpy optimal_snr, is the drawn one."""
    inj = Injector(bank, whiten, physics.noise_psd(), SNRPrior.parse("uniform:5,20"))
    sig, snr = inj.signals(128, batch_generator(0, 1))
    assert ((snr >= 5) & (snr <= 20)).all()
    ratio = (sig.double() ** 2).sum(dim=(1, 2)) / snr**2
    assert 0.85 < float(ratio.mean()) < 1.05, float(ratio.mean())


def test_snr_rescaling_matches_the_generator(bank):
    """The raw (unwhitened) signal the injector scales, measured by data.sim.physics's own
    optimal SNR: the target network SNR."""
    identity = lambda x: x.double()  # noqa: E731
    inj = Injector(bank, identity, physics.noise_psd(), SNRPrior.parse("fixed:12"))
    raw, snr = inj.signals(16, batch_generator(3))
    for x in raw.double().numpy():
        rho = physics.optimal_snr(x)
        assert np.sqrt(np.sum(rho**2)) == pytest.approx(12.0, rel=1e-4)


def test_what_each_kind_of_sample_holds(bank, whiten):
    inj = Injector(bank, whiten, physics.noise_psd(), SNRPrior.parse("fixed:10"))
    noise = torch.randn(400, 3, 4096)
    out = inj.inject(noise, batch_generator(0, 7), positive_fraction=0.4,
                     incoherent_fraction=0.3)
    kind = out.kind.numpy()
    counts = np.bincount(kind, minlength=4) / kind.size
    assert counts[0] == pytest.approx(0.3, abs=0.08) and counts[1] == pytest.approx(0.4, abs=0.08)
    assert counts[2] == pytest.approx(0.15, abs=0.06) and counts[3] == pytest.approx(0.15, abs=0.06)
    np.testing.assert_array_equal(out.target.numpy(), (kind == 1).astype(np.float32))
    changed = (out.x != noise).any(dim=-1).numpy()  # (B, 3): which detectors hold a signal
    assert not changed[kind == 0].any()
    assert changed[kind == 1].all() and changed[kind == 3].all()
    assert (changed[kind == 2].sum(axis=1) == 1).all()
    assert (out.snr.numpy()[kind > 0] == 10).all() and (out.snr.numpy()[kind == 0] == 0).all()
    again = inj.inject(noise, batch_generator(0, 7), positive_fraction=0.4,
                       incoherent_fraction=0.3)
    assert torch.equal(again.x, out.x)  # a batch is a function of its generator's seed
    other = inj.inject(noise, batch_generator(0, 8), positive_fraction=0.4,
                       incoherent_fraction=0.3)
    assert not torch.equal(other.x, out.x)


def test_incoherent_kinds_can_be_chosen(bank, whiten):
    """Only the kinds asked for, each keeping the coherent samples where they were."""
    inj = Injector(bank, whiten, physics.noise_psd(), SNRPrior.parse("fixed:10"))
    noise = torch.randn(300, 3, 4096)
    outs = {kinds: inj.inject(noise, batch_generator(0, 7), positive_fraction=0.4,
                              incoherent_fraction=0.4, incoherent_kinds=kinds)
            for kinds in [("single", "swap"), ("swap",), ("single",)]}
    both, swap, single = (outs[k].kind.numpy() for k in outs)
    incoherent = both >= 2
    assert incoherent.sum() > 60 and (both == 2).any() and (both == 3).any()
    np.testing.assert_array_equal(swap[incoherent], 3)
    np.testing.assert_array_equal(single[incoherent], 2)
    for kind in (swap, single):
        np.testing.assert_array_equal(kind[~incoherent], both[~incoherent])
    changed = (outs[("single",)].x != noise).any(dim=-1).numpy()
    assert (changed[incoherent].sum(axis=1) == 1).all()
    with pytest.raises(ValueError, match="incoherent kinds"):
        inj.inject(noise, batch_generator(0, 7), positive_fraction=0.4,
                   incoherent_fraction=0.4, incoherent_kinds=("glitch",))


def test_a_merger_window_the_bank_cannot_serve_is_refused(bank, whiten):
    with pytest.raises(ValueError, match="max-merger-time"):
        Injector(bank, whiten, physics.noise_psd(), SNRPrior.parse("fixed:8"),
                 merger_window=(1.0, 2.0))


def test_psd_on_grid_is_whitens_interpolation(whiten):
    """The SNR's PSD on a coarser grid is what Whiten divides by (as an ASD, linearly)."""
    psd = physics.noise_psd(512)  # 4 Hz grid
    w = Whiten(psd, alpha=0.25, highpass=None, lowpass=None)
    grid = psd_on_grid(psd, 4096)
    inv = w.response.numpy() / w.response.numpy().max(axis=-1, keepdims=True)
    want = 1 / np.sqrt(grid)
    want /= want.max(axis=-1, keepdims=True)
    np.testing.assert_allclose(inv[:, 1:-1], want[:, 1:-1], rtol=1e-9)


@pytest.mark.parametrize("mode", ["uniform", "snr"])
def test_swap_detector_replaces_a_detector_in_proportion_to_its_snr2(bank, whiten, mode):
    """A swap replaces one detector's signal with another source's. ``uniform`` picks it with
    equal odds; ``snr`` in proportion to its share of the coherent signal's SNR^2, so the share
    of the replaced detector averages sum_d share_d^2 (a loud detector, rarely a weak one).
    The coherent signals are caught as the injector makes them (its first ``render`` call)."""
    inj = Injector(bank, whiten, physics.noise_psd(), SNRPrior.parse("fixed:10"))
    made = []
    render = inj.render

    def catch(*args, **kwargs):
        out = render(*args, **kwargs)
        made.append(out.clone())
        return out

    inj.render = catch
    noise = torch.zeros(600, 3, 4096)
    out = inj.inject(noise, batch_generator(0, 9), positive_fraction=0.0, incoherent_fraction=1.0,
                     incoherent_kinds=("swap",), swap_detector=mode)
    coherent = made[0].double()
    replaced = (out.x.double() - coherent).abs().amax(dim=-1) > 0  # (600, 3)
    assert (replaced.sum(dim=1) == 1).all()
    power = coherent.square().sum(dim=-1)
    share = (power / power.sum(dim=1, keepdim=True)).numpy()
    got = share[replaced.numpy()].mean()
    want = (share**2).sum(axis=1).mean() if mode == "snr" else share.mean()
    # 600 draws of a share in [0, 1]: standard error < 0.02.
    assert abs(got - want) < 0.04, (got, want)
    assert abs((share**2).sum(axis=1).mean() - 1 / 3) > 0.1  # the two modes differ here
    with pytest.raises(ValueError, match="swap_detector"):
        inj.inject(noise, batch_generator(0, 9), positive_fraction=0.0, incoherent_fraction=1.0,
                   swap_detector="loudest")


def test_swap_keep_snr_gives_the_replacement_the_replaced_rows_snr(bank, whiten):
    """With ``swap_keep_snr`` a swap's replaced row holds the other source's waveform at the
    coherent signal's SNR in that detector (whitened power ~ SNR^2), so the sample's
    per-detector SNRs are the coherent signal's; without it, the other source's own. The
    signals are caught as the injector renders them (coherent first, then the other sources)."""
    out, made = {}, {}
    for keep in (False, True):
        inj = Injector(bank, whiten, physics.noise_psd(), SNRPrior.parse("uniform:5,40"))
        calls = []
        render = inj.render

        def catch(*args, calls=calls, render=render, **kwargs):
            got = render(*args, **kwargs)
            calls.append(got.clone())
            return got

        inj.render = catch
        out[keep] = inj.inject(torch.zeros(300, 3, 4096), batch_generator(0, 11),
                               positive_fraction=0.0, incoherent_fraction=1.0,
                               incoherent_kinds=("swap",), swap_detector="snr",
                               swap_keep_snr=keep).x.double()
        made[keep] = [c.double() for c in calls]
    coherent, other = made[True]
    # The same draws either way: only the replaced row's scale differs.
    torch.testing.assert_close(made[False][0], coherent)
    replaced = (out[True] - coherent).abs().amax(dim=-1) > 0  # (300, 3)
    assert (replaced.sum(dim=1) == 1).all()
    assert torch.equal(replaced, (out[False] - coherent).abs().amax(dim=-1) > 0)
    power = {k: out[k].square().sum(dim=-1)[replaced] for k in out}
    want = coherent.square().sum(dim=-1)[replaced]
    np.testing.assert_allclose(power[True].numpy(), want.numpy(), rtol=1e-4)
    # Without it the row is the other source's, at its own SNR: far from the kept one.
    np.testing.assert_allclose(power[False].numpy(), other.square().sum(dim=-1)[replaced].numpy(),
                               rtol=1e-4)
    assert np.median(np.abs(np.log(power[False].numpy() / want.numpy()))) > 0.3
    # The waveform is the other source's: the kept row is the unkept one times a constant.
    ratio = out[True][replaced] / out[False][replaced].where(out[False][replaced] != 0,
                                                              torch.tensor(np.nan))
    spread = np.nanstd(ratio.numpy(), axis=1) / np.abs(np.nanmean(ratio.numpy(), axis=1))
    assert (spread < 1e-4).all()


def test_mass_power_draws_rows_in_proportion_to_total_mass_to_the_power(bank, whiten):
    """inject.mass_power: rows drawn with odds (mass1 + mass2)^p, the masses taken from the
    bank's own sources (data.inject.bank.draw_sources), by a chi-square test over 32 rows;
    power 0 leaves the uniform draw (the bank's prior) as it was."""
    from scipy.stats import chisquare

    spec = BankSpec(n=32, seed=1, chunk_size=16)
    total = np.array([s.mass1 + s.mass2 for c in (0, 1) for s in draw_sources(spec, c)])
    assert mass_weights(bank.params, 0.0) is None
    n = 40_000
    for power in (-3.0, 2.0):
        inj = Injector(bank, whiten, physics.noise_psd(), SNRPrior.parse("fixed:10"),
                       weights=mass_weights(bank.params, power))
        counts = np.bincount(inj.rows(n, batch_generator(0, 1)).numpy(), minlength=32)
        want = total**power / (total**power).sum() * n
        assert chisquare(counts, want).pvalue > 1e-3
        # and the draw is not the uniform one it replaces
        assert chisquare(counts, np.full(32, n / 32)).pvalue < 1e-9
    plain = Injector(bank, whiten, physics.noise_psd(), SNRPrior.parse("fixed:10"))
    counts = np.bincount(plain.rows(n, batch_generator(0, 1)).numpy(), minlength=32)
    assert chisquare(counts).pvalue > 1e-3
    with pytest.raises(ValueError, match="weights"):
        Injector(bank, whiten, physics.noise_psd(), SNRPrior.parse("fixed:10"),
                 weights=np.full(31, 1.0))


def test_hard_positives_take_their_source_sky_and_snr(bank, whiten):
    """inject(hard=...): a coherent signal is a hard source with the odds hard_fraction, at
    its SNR, bank row, sky position and polarisation (its merger time drawn), judged by how
    the whitened power (~ SNR^2) is shared between the detectors, against the source rendered
    apart; incoherent negatives never are; hard=None draws exactly what it drew before."""
    # Mergers away from the whitening's window taper, which would move each detector's power
    # by where its (delayed) merger falls.
    inj = Injector(bank, whiten, physics.noise_psd(), SNRPrior.parse("fixed:10"),
                   merger_window=(1.3, 1.5))
    f64 = dict(dtype=torch.float64)
    hard = Sources(torch.tensor([5, 17]), torch.tensor([0.3, 4.0], **f64),
                   torch.tensor([0.9, -0.4], **f64), torch.tensor([0.1, 2.5], **f64),
                   torch.zeros(2, **f64), torch.tensor([37.0, 61.0], **f64))
    # Each hard source's power per detector, rendered apart at one merger time.
    alone = inj.render(Sources(*(getattr(hard, f) for f in ("row", "ra", "dec", "psi")),
                               torch.full((2,), 1.4, **f64), hard.snr))
    share = alone.double().square().sum(-1)  # (2, 3)
    kw = dict(positive_fraction=0.5, incoherent_fraction=0.3)
    out = inj.inject(torch.zeros(2000, 3, 4096), batch_generator(0, 7), hard=hard,
                     hard_fraction=0.4, **kw)
    power = out.x.double().square().sum(-1)  # (2000, 3)
    pos = out.kind == 1
    is_hard = pos & (out.snr != 10)
    assert set(out.snr[is_hard].tolist()) == {37.0, 61.0}
    assert (out.snr[out.kind >= 2] == 10).all()  # negatives keep the prior
    frac = is_hard.sum().item() / pos.sum().item()
    n = pos.sum().item()
    assert abs(frac - 0.4) < 4 * np.sqrt(0.4 * 0.6 / n)
    for k, snr in enumerate((37.0, 61.0)):
        rows = out.snr == snr
        assert rows.sum() > 50
        # How the power is shared between the detectors is the sky position's, polarisation
        # angle's and source's.
        got = (power[rows] / power[rows].sum(-1, keepdim=True)).numpy()
        np.testing.assert_allclose(got, (share[k] / share[k].sum()).expand(len(got), 3).numpy(),
                                   atol=0.005)
    # The two sources share their power unlike each other: the test tells them apart.
    assert (share[0] / share[0].sum() - share[1] / share[1].sum()).abs().max() > 0.1
    # The other signals' powers are not the hard ones' (10 against 37 and 61).
    assert (power[pos & ~is_hard].sum(-1) < 0.2 * share.sum(-1).min()).all()
    # Off (None or fraction 0): the very draws of a run without hard positives.
    ref = inj.inject(torch.zeros(64, 3, 4096), batch_generator(0, 8), **kw)
    for h, f in ((None, 0.4), (hard, 0.0)):
        got = inj.inject(torch.zeros(64, 3, 4096), batch_generator(0, 8), hard=h,
                         hard_fraction=f, **kw)
        assert torch.equal(got.x, ref.x) and torch.equal(got.kind, ref.kind)
