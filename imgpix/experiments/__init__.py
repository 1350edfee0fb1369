"""Experiments on top of the library: the noisy-label study, the ablations, the scene statistics.

``runner`` (output directory, outputs registry, work units, process pool), ``stats`` (every statistic: one
confidence level, one resample policy, one result type), ``theory_tests`` (Eqs. 4-14 on measured nats),
``verdicts`` (how a CI decides: holds / refuted / inconclusive), ``theory_checks`` (removal regression, count
sufficiency, Case 2 loss), ``report`` (Markdown tables, versions, spliced docs), ``cache`` (trained models by
configuration), ``cli`` (the scripts' shared options and start-up checks); the experiments ``noisy_labels``
and ``ablation`` (packages: design, run, analysis, report) and ``scene_stats``.
"""
