"""Analysis and plotting shared by the notebooks (``notebooks/``), ``python -m repro.artifacts``
and ``repro.demo``, in small modules:

* ``objective_figures``: the weights' explainers from ``repro.objective`` alone (Figure 2, f by
  method, how far λ must move, Eq. 20 against autograd);
* ``loading``: the run folder to read, every run's metrics and evaluation scores (through
  ``repro.runs``);
* ``plots``: method labels and colours, seed bands and their smoothing, the run figures;
* ``summaries``: per-run and per-method tables, differences between methods against seed noise,
  λ's gradient against cov(length, advantage);
* ``stats``: means and 95% t-intervals across seeds, and the package's one rule for a
  difference "beyond seed noise" (its interval excludes 0), used by all of the above, the demo
  and ``repro.artifacts``;
* ``cpu_tables``, ``cpu_figures``: the CPU reproduction's tables and figures (``repro.demo``).

The paper's facts (its benchmarks, Table 1 and its check, the comparison with it) are in
``repro.paper``. Nothing here hard-codes a result: each function computes what it returns
from its arguments. The names below are this package's API for notebooks
(``from repro import analysis as an; an.fig_metric_bands(...)``); each lives in one module.

Units used on every axis: optimizer steps; response length in tokens; token entropy in nats per
token; λ, f, g and h are dimensionless; reward on the paper's +1 / -0.5 / -1 scale; accuracy in %.
"""
from repro.analysis.loading import (DEFAULT_RUNS, RUNS_ENV, SEED_ONLY_KEYS, config_id, eval_frame,
                                    load_runs, repo_root, require_runs, resolve_runs_dir, run_labels,
                                    runs_by_label)
from repro.analysis.objective_figures import (RTOL_EQ20, departure, eq20_compare, eq20_grid, eq20_html,
                                              eq20_recorded, fig_departure, fig_eq20, fig_f_methods,
                                              fig_g_of_h, fig_h_spread, h_spread_table, lambda_needed,
                                              lambda_needed_table, methods_table, normal_quantile_group,
                                              random_groups, synthetic_L)
from repro.analysis.plots import (METHOD_COLORS, METHOD_LABELS, METRIC_LABELS, PERCENT_METRICS, R_NAMES,
                                  base_tasks, curve_label, fig_eval_curves, fig_f_spread, fig_grad_vs_cov,
                                  fig_lambda_trajectories, fig_metric_bands, label, periodic_evals, plot_band,
                                  problem_set, r_name, scale, seed_band, seeds_label, setting_styles,
                                  smooth_band)
from repro.analysis.stats import Difference, beyond_noise, mean_ci, paired_difference, welch_difference
from repro.analysis.summaries import across_runs, grad_cov_table, method_differences, method_summary, run_summary
from repro.paper import FIG2_R, load_table1, table1_average_check
