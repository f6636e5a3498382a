"""A small synthetic multi-scenario dataset with learnable structure, in RecBole atomic files.

Two platforms (``shop-a``, the larger source, and ``shop-b``, the target) sell partly the same
items (same title and year, different ids), to different users. Each user prefers one or two
categories and mostly consumes items from them, so interests are learnable and transferable.
Used by ``ray_jobs/configs/tiny.yaml`` and the tests; a few hundred rows, written in
milliseconds, deterministic for a seed.
"""

from __future__ import annotations

import random
from pathlib import Path

CATEGORIES = ("Action", "Comedy", "Drama", "Sci-Fi", "Romance", "Horror")
_ADJ = ("Silent", "Golden", "Broken", "Hidden", "Last", "Crimson", "Frozen", "Wild", "Electric", "Lonely")
_NOUN = ("River", "Empire", "Garden", "Signal", "Harbor", "Machine", "Summer", "Storm", "Mirror", "Forest")


def _items(rng: random.Random, n: int) -> list[dict]:
    titles = [f"{a} {b}" for a in _ADJ for b in _NOUN]
    rng.shuffle(titles)
    out = []
    for i in range(n):
        cats = rng.sample(CATEGORIES, rng.choice((1, 1, 2)))
        out.append({"title": titles[i], "year": rng.randint(1990, 2005), "categories": cats})
    return out


def _sequences(rng, users: int, catalog: list[int], items: list[dict], prefix: str, t0: int,
               length: tuple[int, int]) -> list[tuple[str, int, float, int]]:
    by_cat = {c: [i for i in catalog if c in items[i]["categories"]] for c in CATEGORIES}
    rows = []
    for u in range(users):
        likes = rng.sample(CATEGORIES, rng.choice((1, 2)))
        t = t0 + rng.randint(0, 86_400 * 30)
        seen: set[int] = set()
        for _ in range(rng.randint(*length)):
            pool = [i for c in likes for i in by_cat[c] if i not in seen] if rng.random() < 0.85 else \
                [i for i in catalog if i not in seen]
            if not pool:
                break
            i = rng.choice(pool)
            seen.add(i)
            liked = any(c in likes for c in items[i]["categories"])
            rating = float(rng.choice((4, 5)) if liked else rng.choice((1, 2, 3)))
            t += rng.randint(60, 86_400 * 3)
            rows.append((f"{prefix}{u}", i, rating, t))
    return rows


def write_synthetic(data_dir: str | Path, seed: int = 0, users_a: int = 40, users_b: int = 20) -> dict:
    """Write ``shop-a/shop-a.{inter,item}`` and ``shop-b/shop-b.{inter,item}`` under data_dir."""
    rng = random.Random(seed)
    items = _items(rng, 70)
    shared = list(range(0, 40))
    a_only, b_only = list(range(40, 60)), list(range(60, 70))
    catalogs = {"shop-a": shared + a_only, "shop-b": shared + b_only}
    plan = {"shop-a": (users_a, "a", 946_684_800), "shop-b": (users_b, "b", 1_104_537_600)}
    data_dir = Path(data_dir)
    counts = {}
    for platform, catalog in catalogs.items():
        n_users, prefix, t0 = plan[platform]
        id_of = {i: f"{platform[-1].upper()}{i:04d}" for i in catalog}  # platform-specific ids
        rows = _sequences(rng, n_users, catalog, items, f"{prefix}_u", t0, (8, 14))
        folder = data_dir / platform
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{platform}.item", "w", encoding="utf-8") as f:
            f.write("item_id:token\ttitle:token\trelease_year:token\tgenre:token_seq\n")
            for i in catalog:
                it = items[i]
                f.write(f"{id_of[i]}\t{it['title']}\t{it['year']}\t{' '.join(it['categories'])}\n")
        with open(folder / f"{platform}.inter", "w", encoding="utf-8") as f:
            f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
            for user, i, rating, t in rows:
                f.write(f"{user}\t{id_of[i]}\t{rating:g}\t{t}\n")
        counts[platform] = {"interactions": len(rows), "items": len(catalog), "users": n_users}
    return counts


def walk_sequences(n_items: int = 40, n_users: int = 128, length: int = 14, jump: float = 0.05, seed: int = 0,
                   scenario: str = "walk"):
    """Prepared sequences (the ``sequences`` table's columns) with one rule to learn: each user
    walks the catalog item ``i`` -> ``i + 1`` (wrapping around), jumping to a random item with
    probability ``jump``. The held-out events (validation: the second to last, test: the last)
    never jump, so a model that learned the rule ranks them first. Items are ``w000``.. with the
    titles of :func:`walk_titles`. A learnability check, not a benchmark."""
    import pandas as pd

    if n_items > len(_ADJ) * len(_NOUN):
        raise ValueError(f"at most {len(_ADJ) * len(_NOUN)} walk items")
    rng = random.Random(seed)
    rows = []
    for u in range(n_users):
        walk = [rng.randrange(n_items)]
        for t in range(1, length):
            held_out = t >= length - 2
            walk.append(rng.randrange(n_items) if not held_out and rng.random() < jump else (walk[-1] + 1) % n_items)
        rows.append({"scenario": scenario, "user_id": f"u{u}", "item_ids": [f"w{i:03d}" for i in walk],
                     "timestamps": list(range(length)), "event_types": ["view"] * length, "values": [1.0] * length,
                     "length": length, "n_scenarios": 1, "loo_train_end": length - 2, "loo_valid_end": length - 1,
                     "time_train_end": None, "time_valid_end": None})
    return pd.DataFrame(rows)


def walk_titles(n_items: int = 40) -> list[str]:
    """Distinct titles of the walk items, in id order (their text for a text model)."""
    return [f"{a} {b}" for a in _ADJ for b in _NOUN][:n_items]
