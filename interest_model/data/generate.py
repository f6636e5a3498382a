"""A synthetic platform of any size, for measuring how every stage grows (``interest data
generate``): N events of U users over M items in S scenarios (product lines of one platform),
written as Parquet (or CSV) parts plus a ready ``prepare.yaml``, a chunk of users at a time, so
memory stays bounded whatever N; the same files for the same arguments and seed.

What there is to learn, so that a model must beat popularity on it as on MovieLens:

- **Items.** Each has a main category (and sometimes a second), a scenario, a title and a
  description drawn from its category's own words (so the text says what the item is about), and
  a popularity that falls as a power law with its rank in the category. A share of the items
  (``shared_items``) is sold in a second scenario too: the same id, read in both.
- **Users** hold a few interests (categories, with weights) that drift: the sequence is cut into
  phases, and each phase may swap one interest for a new one. Most events pick an interest, then an
  item of it by popularity; some follow the previous item to the next one of its series (the next
  id of its category: an order only a sequence model sees); the rest are popular items of any
  category. A user is active in one scenario or several (``multi_scenario_users``); how many
  events a user has follows a long-tailed law around ``events / users``.
- **Time** runs over ``days`` days; each user starts at a random time, events follow at random
  gaps; ratings are higher on the user's current interests.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

START = 1_577_836_800  # 2020-01-01, UTC

_SYLLABLES = ("ka", "lo", "mi", "ra", "ten", "vu", "sel", "dor", "an", "bri", "cho", "fen", "gal", "hur", "is",
              "jor", "kel", "lum", "mor", "nes", "ol", "pra", "quin", "ros", "sta", "tor", "ul", "ven", "wex", "yar")
_COMMON = ("a", "the", "with", "for", "of", "and", "new", "classic", "edition", "set", "series", "collection",
           "guide", "pack", "deluxe", "original", "essential", "complete")


@dataclass(frozen=True)
class GenerateConfig:
    events: int = 1_000_000
    users: int | None = None  # default: events / 100
    items: int | None = None  # default: events / 250
    scenarios: int = 3
    categories: int = 40
    seed: int = 0
    days: int = 730
    shared_items: float = 0.2  # share of items also sold in a second scenario
    multi_scenario_users: float = 0.4  # share of users active in more than one scenario
    interest_share: float = 0.8  # events on the user's current interests
    series_share: float = 0.1  # events that follow the previous item to the next of its series (the rest: any category)
    popularity_exponent: float = 1.0  # item weight within its category: rank ** -exponent
    phase_events: int = 20  # a user's interests may drift every this many events
    events_per_part: int = 1_000_000  # about this many events per file (and in memory at once)
    file_type: str = "parquet"  # or "csv"

    def resolved(self) -> "GenerateConfig":
        users = self.users or max(10, self.events // 100)
        items = self.items or max(50, self.events // 250)
        if self.events < users * 2:
            raise ValueError(f"{self.events} events for {users} users: at least 2 events per user")
        if self.scenarios < 1 or self.categories < 2 or items < self.categories:
            raise ValueError("need >= 1 scenario, >= 2 categories and at least one item per category")
        if self.file_type not in ("parquet", "csv"):
            raise ValueError(f"file_type {self.file_type!r}: parquet or csv")
        if not 0 <= self.interest_share + self.series_share <= 1:
            raise ValueError("interest_share + series_share must be within [0, 1]")
        return GenerateConfig(**{**asdict(self), "users": users, "items": items})


def _ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(numbers).cast(pa.string()), "")


def _words(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct pronounceable words of two or three syllables."""
    out: dict[str, None] = {}
    while len(out) < n:
        for k in rng.integers(2, 4, size=n):
            out["".join(rng.choice(_SYLLABLES, size=k))] = None
            if len(out) == n:
                break
    return np.array(list(out))


@dataclass
class Catalog:
    """The generated items, in id order, with what the event sampler needs."""

    category: np.ndarray  # main category per item
    category_weights: np.ndarray  # how likely a user holds each category as an interest (a power law)
    scenario: np.ndarray  # home scenario per item
    second_scenario: np.ndarray  # another scenario that sells it, or -1
    pools: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]  # (scenario, category) -> (items, cumulative weights)
    successor: np.ndarray  # the next item of its series: the next id of its category in its home scenario
    table: pa.Table


def build_catalog(cfg: GenerateConfig, rng: np.random.Generator) -> Catalog:
    m, c, s = cfg.items, cfg.categories, cfg.scenarios
    vocab = _words(rng, c * 13)
    cat_words, cat_names = vocab[: c * 12].reshape(c, 12), np.char.capitalize(vocab[c * 12:])
    category = rng.integers(0, c, size=m)
    second = np.where(rng.random(m) < 0.3, (category + rng.integers(1, c, size=m)) % c, -1)
    scenario = rng.integers(0, s, size=m)
    second_scenario = np.where((rng.random(m) < cfg.shared_items) & (s > 1),
                               (scenario + rng.integers(1, max(2, s), size=m)) % s, -1)
    # Titles and descriptions from the category's words (and a second category's, when it has one).
    w = rng.integers(0, 12, size=(m, 6))
    own = cat_words[category[:, None], w]
    other = cat_words[np.where(second >= 0, second, category)[:, None], w[:, :2]]
    common = np.array(_COMMON)[rng.integers(0, len(_COMMON), size=(m, 3))]
    titles = [f"{a.capitalize()} {b} {d}" for a, b, d in zip(own[:, 0], own[:, 1], common[:, 0])]
    descriptions = [" ".join(words) for words in zip(own[:, 2], common[:, 1], other[:, 0], own[:, 3], own[:, 4],
                                                     common[:, 2], other[:, 1], own[:, 5])]
    cats = [n if j < 0 else f"{n}|{cat_names[j]}" for n, j in zip(cat_names[category], second)]
    table = pa.table({"item_id": _ids("i", np.arange(m)), "title": titles,
                      "year": rng.integers(1970, 2025, size=m).astype(np.int32), "categories": cats,
                      "description": descriptions})
    pools, successor = {}, np.arange(m)
    for sc in range(s):
        sold = (scenario == sc) | (second_scenario == sc)
        everything = np.flatnonzero(sold)
        pools[(sc, -1)] = (everything, (np.arange(len(everything)) + 1) / len(everything))  # uniform
        for cat in range(c):
            members = np.flatnonzero(sold & (category == cat))
            if len(members) == 0:
                continue
            rank = rng.permutation(len(members)) + 1  # popularity rank, unrelated to the series order
            weights = rank.astype(np.float64) ** -cfg.popularity_exponent
            pools[(sc, cat)] = (members, np.cumsum(weights) / weights.sum())
            home = members[scenario[members] == sc]
            successor[home] = np.roll(home, -1)
    rank = rng.permutation(c) + 1
    weights = rank ** -0.8
    return Catalog(category, weights / weights.sum(), scenario, second_scenario, pools, successor, table)


KEY = 1 << 20  # (scenario, category) -> scenario * KEY + category


def _draw(pools, scen: np.ndarray, category: np.ndarray, u: np.ndarray) -> np.ndarray:
    """An item per event, from the pool of its (scenario, category) by popularity (any item its
    scenario sells where that pool is empty)."""
    keys = scen * KEY + category
    out = np.zeros(len(keys), dtype=np.int64)
    for code in np.unique(keys):
        sc, cat = divmod(int(code), KEY)
        items, cum = pools.get((sc, cat)) or pools[(sc, -1)]
        at = keys == code
        out[at] = items[np.minimum(np.searchsorted(cum, u[at]), len(items) - 1)]
    return out


def _counts(rng: np.random.Generator, n_users: int, target: int) -> np.ndarray:
    """Events per user: long-tailed (log-normal), at least 2, summing to ``target``."""
    raw = rng.lognormal(0.0, 1.0, size=n_users)
    counts = np.maximum(2, np.round(raw / raw.sum() * target)).astype(np.int64)
    diff = target - int(counts.sum())
    if diff > 0:
        np.add.at(counts, rng.integers(0, n_users, size=diff), 1)
    while diff < 0:  # take from the largest
        room = np.flatnonzero(counts > 2)
        take = room[np.argsort(-counts[room], kind="stable")[:-diff]]
        counts[take] -= 1
        diff += len(take)
    return counts


def _user_chunk(cfg: GenerateConfig, cat: Catalog, first: int, counts: np.ndarray,
                rng: np.random.Generator) -> pa.Table:
    """Events of the users ``first``, ``first + 1``, ... with ``counts`` events each."""
    c, s, n_users = cfg.categories, cfg.scenarios, len(counts)
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    user = np.repeat(np.arange(n_users), counts)
    pos = np.arange(total) - starts[user]

    # Interests: three per user, weighted. Every phase_events events a phase begins, which may swap
    # the main interest for a new category (it stays swapped until the next swap).
    interests = rng.choice(c, size=(n_users, 3), p=cat.category_weights)
    weights = np.cumsum(rng.dirichlet(np.ones(3) * 0.7, size=n_users), axis=1)
    slot = (rng.random(total)[:, None] > weights[user]).sum(1).clip(0, 2)
    begins = pos % cfg.phase_events == 0
    phase = np.cumsum(begins) - 1  # a global phase index per event
    phase_user = user[begins]
    first_phase = np.flatnonzero(pos[begins] == 0)[phase_user]  # each phase's user's first phase
    drifted = (rng.random(len(phase_user)) < 0.3) & (np.arange(len(phase_user)) != first_phase)
    latest = np.maximum.accumulate(np.where(drifted, np.arange(len(phase_user)), first_phase))
    new_main = rng.choice(c, size=len(phase_user), p=cat.category_weights)
    chosen = interests[user, slot]
    swapped = (slot == 0) & (latest[phase] != first_phase[phase])
    chosen = np.where(swapped, new_main[latest[phase]], chosen)

    # Scenarios: one for most users; two for the multi-scenario ones.
    home = rng.integers(0, s, size=n_users)
    multi = (rng.random(n_users) < cfg.multi_scenario_users) & (s > 1)
    alt = (home + rng.integers(1, max(2, s), size=n_users)) % s
    scen = np.where(multi[user] & (rng.random(total) < 0.4), alt[user], home[user])

    kind = rng.random(total)
    category = np.where(kind < cfg.interest_share, chosen, rng.choice(c, size=total, p=cat.category_weights))
    items = _draw(cat.pools, scen, category, rng.random(total))
    # Series: the next item of the previous one's series, where the event's scenario sells it.
    nxt = cat.successor[np.roll(items, 1)]
    follow = (kind >= cfg.interest_share) & (kind < cfg.interest_share + cfg.series_share) & (pos > 0) & \
        ((cat.scenario[nxt] == scen) | (cat.second_scenario[nxt] == scen))
    items = np.where(follow, nxt, items)

    # Time: a start in the first half of the span, then gaps of about (half the span) / events.
    span = cfg.days * 86_400 / 2
    start = START + rng.integers(0, int(span), size=n_users)
    gaps = (rng.exponential(1.0, size=total) * span / counts[user]).astype(np.int64) + 60
    gaps[starts] = 0
    ts = start[user] + np.cumsum(gaps) - np.cumsum(gaps)[starts][user]
    liked = (cat.category[items][:, None] == interests[user]).any(1) | (cat.category[items] == chosen)
    rating = np.where(liked, rng.integers(4, 6, size=total), rng.integers(1, 5, size=total)).astype(np.int8)
    return pa.table({"user_id": _ids("u", first + user), "item_id": _ids("i", items), "timestamp": ts,
                     "rating": rating, "scenario": _ids("s", scen)})


def _write(table: pa.Table, path: Path, file_type: str) -> None:
    if file_type == "parquet":
        pq.write_table(table, path.with_suffix(".parquet"), row_group_size=1 << 20)
    else:
        pacsv.write_csv(table, path.with_suffix(".csv"))


def prepare_config(cfg: GenerateConfig, root: Path) -> dict:
    """A ``prepare`` config for the generated files: one platform, a scenario per product line
    (the last one the target, the others sources)."""
    suffix = cfg.file_type
    return {
        "input": {"root": str(root), "sources": [{
            "name": "platform", "format": "generic", "file_type": suffix,
            "interactions": f"events/*.{suffix}", "items": f"items/*.{suffix}",
            "interaction_columns": {"user_id": "user_id", "item_id": "item_id", "timestamp": "timestamp",
                                    "value": "rating", "scenario": "scenario"},
            "item_columns": {"item_id": "item_id", "title": "title", "year": "year", "categories": "categories",
                             "description": "description"},
            "category_separator": "|"}]},
        "scenarios": [{"name": f"s{i}", "role": "target" if i == cfg.scenarios - 1 and cfg.scenarios > 1 else "source",
                       "source": "platform", "values": [f"s{i}"]} for i in range(cfg.scenarios)],
        "pseudonymize": {"key": f"generated-{cfg.seed}-not-secret"},
        "kcore": {"user_k": 3, "item_k": 3},
        "splits": {"leave_one_out": True},
        "output_dir": str(root / "prepared"),
    }


def generate(cfg: GenerateConfig, out: str | Path, progress=None) -> dict:
    """Write ``items/``, ``events/`` (a part per chunk of users), ``prepare.yaml`` and
    ``generated.json`` under ``out``; returns the counts. ``progress(events_written)`` after each
    part. The users' event counts are drawn first (8 bytes a user), then each chunk's events."""
    import yaml

    cfg = cfg.resolved()
    out = Path(out)
    if (out / "generated.json").exists() or (out / "events").exists():
        raise FileExistsError(f"{out} already holds generated data: choose another folder or remove it")
    (out / "items").mkdir(parents=True, exist_ok=True)
    (out / "events").mkdir(parents=True)
    seeds = np.random.SeedSequence(cfg.seed).spawn(3)
    catalog = build_catalog(cfg, np.random.default_rng(seeds[0]))
    _write(catalog.table, out / "items" / "part-00000", cfg.file_type)
    counts = _counts(np.random.default_rng(seeds[1]), cfg.users, cfg.events)
    # Chunks of whole users of about events_per_part events each.
    bounds = np.searchsorted(np.cumsum(counts), np.arange(cfg.events_per_part, cfg.events, cfg.events_per_part))
    edges = [0, *sorted(set((bounds + 1).clip(1, cfg.users).tolist()) - {cfg.users}), cfg.users]
    rngs = [np.random.default_rng(s) for s in seeds[2].spawn(len(edges) - 1)]
    written = 0
    for k, (lo, hi) in enumerate(zip(edges, edges[1:])):
        table = _user_chunk(cfg, catalog, lo, counts[lo:hi], rngs[k])
        _write(table, out / "events" / f"part-{k:05d}", cfg.file_type)
        written += table.num_rows
        if progress is not None:
            progress(written)
    report = {"config": asdict(cfg), "events": written, "users": cfg.users, "items": cfg.items,
              "scenarios": cfg.scenarios, "parts": len(edges) - 1}
    (out / "prepare.yaml").write_text(yaml.safe_dump(prepare_config(cfg, out.resolve()), sort_keys=False))
    (out / "generated.json").write_text(json.dumps(report, indent=1))
    return report
