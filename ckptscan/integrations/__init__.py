"""Integrations shipped with ckptscan: the GitHub Action's script (:mod:`.github_action`).

The pre-commit hook runs ``ckptscan scan --shard-sets --skip-non-keras --allow-empty`` (``.pre-commit-hooks.yaml``);
:mod:`.shardsets` resolves a named shard to its sharded set. See docs/ci.md.
"""
