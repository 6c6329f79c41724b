"""Statistics over study results: pure functions from tidy DataFrames to tidy DataFrames (no I/O, no plots).

tables     per-image results -> per-subject scores; paired subject x seed views
inference  means with hierarchical-bootstrap CIs, paired tests, Friedman, Holm, non-inferiority, TOST
curves     learning-curve fits and the budget reaching a target, with bootstrap CIs
mixed      linear mixed model (statsmodels MixedLM) as a model-based summary
planning   power and the test subjects / seeds a question needs
"""
from harness.stats.costs import cheapest, cost_table
from harness.stats.curves import fit_learning_curves
from harness.stats.inference import (TESTS, compare_budgets, compare_strategies, compare_to_base, enough,
                                     friedman, holm, image_level_wilcoxon, mean_ci,
                                     image_level_comparisons, noninferiority, noninferiority_table, paired_test,
                                     parse_reference, summarise)
from harness.stats.mixed import MixedFit, fit_mixed
from harness.stats.planning import Components, plan, power, power_limit, subjects_needed, variance_components
from harness.stats.tables import (BASE, METRICS, VOLUME_METRICS, by_seed, fine_tuned, is_base, paired_by_seed,
                                  subject_differences,
                                  subject_scores, with_dice)

__all__ = [
    "BASE", "cheapest", "cost_table", "Components", "METRICS", "power_limit", "fine_tuned", "is_base", "TESTS", "VOLUME_METRICS", "MixedFit", "by_seed", "compare_budgets", "compare_strategies",
    "compare_to_base", "enough", "fit_learning_curves", "fit_mixed", "friedman", "holm",
    "image_level_comparisons", "image_level_wilcoxon", "mean_ci", "noninferiority", "noninferiority_table", "paired_by_seed", "paired_test",
    "parse_reference", "plan", "power", "subject_differences", "subject_scores", "subjects_needed", "summarise",
    "variance_components", "with_dice",
]
