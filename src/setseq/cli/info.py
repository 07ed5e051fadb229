"""`setseq info`: what a concept file holds."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    """The `info` command and its flags."""
    p = sub.add_parser("info", help="describe a concept file", description="Print what a concept file holds.")
    p.add_argument("concept", help="concept file (.safetensors)")
    p.add_argument("--json", action="store_true", help="print the metadata as JSON")
    p.set_defaults(func=cmd_info)


def cmd_info(a: argparse.Namespace) -> int:
    """Print a concept file's method, base, rank, geometry, concepts and losses (or its metadata as JSON)."""
    from setseq import concept as concept_io

    cs = concept_io.load(a.concept)
    m = cs.meta
    if a.json:
        print(json.dumps({k: v for k, v in m.items() if k != "losses"}, indent=2))
        return 0
    print(f"concept set  {a.concept}")
    print(f"method       {m.get('method')} (stage: {m.get('stage')})")
    if any(st.get("train_basis") for st in m.get("config", {}).get("stages", [])):
        print("             stage 2 also trained the identity basis (--train-basis; not the paper's method)")
    print(f"base         {m['base']['name']} (weights {m['base']['fingerprint']})")
    print(f"rank         {m.get('rank')}, {len(cs.modules())} adapted modules")
    for name, e in m.get("experts", {}).items():  # Wan 2.2 T2V-A14B
        n = sum(mod.startswith(f"{name}.") for mod in cs.modules())
        print(f"expert       {name} ({e.get('component')}): t in {e.get('t')}, {n} adapted modules")
    g = m.get("geometry", {})
    if g:
        print(f"geometry     {g.get('frames')} frames, {g.get('height')}x{g.get('width')} at {g.get('fps')} fps")
    for c in cs.concepts:
        print(f"concept      {c['name']}: {c['identity_token']} {c['motion_token']}  (from {c.get('video') or '?'})")
        print(f"  prompt         {c.get('prompt')}")
        if c.get("motion_prompt"):
            print(f"  motion prompt  {c['motion_prompt']}")
    for stage, losses in m.get("losses", {}).items():
        if losses:
            print(f"loss         {stage}: {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} steps")
    return 0
