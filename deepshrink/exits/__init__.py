"""Early exit: classifiers after chosen layers, a decision per exit, inference that stops early on
easy inputs (BranchyNet, Teerapittayanon et al. 2016; MSDNet, Huang et al. 2018; learned
decisions after Bolukbasi et al. 2017).

* :mod:`.attach`: where the exits go, checked, and their heads (the plan: :mod:`deepshrink.exit_heads`);
* :mod:`.taps`: forward hooks at named layers that read, replace or stop (no tracing);
* :mod:`.train`: heads on a frozen backbone (features cached) or jointly with it, optional
  self-distillation from the final exit;
* :mod:`.policies`: max-softmax, entropy, learned decision functions; :mod:`.gates`: oracle
  labels and cost-aware sample weights;
* :mod:`.cost`: each stage's MACs (profiler) or latency, and the expected cost from exit shares;
* :mod:`.search`: thresholds meeting an accuracy floor at the lowest expected cost, and the
  accuracy vs cost curve; :mod:`.calibrate` runs it for each policy on the validation split;
* :mod:`.model`: :class:`EarlyExitModel`, adaptive inference (batch 1 stops; a batch runs later
  stages only on the undecided rows); :mod:`.export`: each stage as ONNX; :mod:`.plot`: the curves.

The command is ``deepshrink early-exit`` (:func:`deepshrink.pipelines.early_exit.early_exit_file`).
"""

from ..exit_heads import EXITS_KEY, ExitPlan, Gate, HeadSpec, attach_heads, build_head
from .attach import attach_exits, default_exit_layers, plan_exits
from .calibrate import PolicyChoice, calibrate, calibrate_policy, collect_exit_logits, policy_scores
from .cost import StageCosts, expected_cost, exit_shares, measure_stage_latency, measure_stage_macs, path_costs
from .export import export_stages, stage_modules
from .gates import fit_gate, fit_gates, oracle_targets
from .model import EarlyExitModel, adaptive_accuracy, heads_of
from .plot import plot_curves
from .policies import exit_score, gate_features, policy_name
from .search import SearchResult, assess, assess_many, frontier, search_many, search_thresholds, simulate
from .taps import StopForward, check_cut, layer_outputs, run_until, tapped
from .train import ExitTraining, exit_loss, train_heads

__all__ = [
    "EXITS_KEY", "ExitPlan", "HeadSpec", "Gate", "attach_heads", "build_head",
    "attach_exits", "plan_exits", "default_exit_layers",
    "StopForward", "tapped", "run_until", "layer_outputs", "check_cut",
    "ExitTraining", "train_heads", "exit_loss",
    "exit_score", "gate_features", "policy_name", "oracle_targets", "fit_gate", "fit_gates",
    "StageCosts", "measure_stage_macs", "measure_stage_latency", "path_costs", "expected_cost", "exit_shares",
    "SearchResult", "simulate", "assess", "assess_many", "search_thresholds", "search_many", "frontier",
    "PolicyChoice", "calibrate", "calibrate_policy", "collect_exit_logits", "policy_scores",
    "EarlyExitModel", "heads_of", "adaptive_accuracy", "export_stages", "stage_modules", "plot_curves",
]
