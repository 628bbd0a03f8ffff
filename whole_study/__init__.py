"""The whole study in one command: its parts (the MLP sweep and the unsupervised studies),
their reuse by fingerprint, and the report beside the reference notebook's numbers.

The top floor of the house: it may import ``datamodules``, ``labkit``, ``lightning_modules`` and
``reduction`` (which never import each other), and nothing imports it but ``scripts/study.py``.

* :mod:`whole_study.parts`: the four parts, their full and quick profiles, ``--set`` overrides;
* :mod:`whole_study.fingerprint`: what a part's results depend on (settings, data digests, sources);
* :mod:`whole_study.runner`: :func:`~whole_study.runner.run_study` computes or reuses each part, resumes
  after Ctrl-C, writes the report;
* :mod:`whole_study.report` and ``whole_study/reference.json``: the report and the reference's numbers;
* :mod:`whole_study.readme`: README's "What a full run finds" block from a study's results.
"""
