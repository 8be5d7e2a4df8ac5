"""Integrations shipped with ckptscan: the GitHub Action's script (:mod:`.github_action`).

The pre-commit hook needs no code: ``.pre-commit-hooks.yaml`` runs ``ckptscan scan``.
"""
