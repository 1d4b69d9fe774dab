"""Teacher pseudo-labels: Depth Anything V2 through transformers (``docs/teacher.md``).

Light imports only here (numpy): :mod:`.model` and :mod:`.stage` pull in torch/transformers.
"""

from depthdata.teacher.config import TeacherConfig
from depthdata.teacher.pseudo import PseudoMetricRange, disparity01_to_depth, pseudo_metric, pseudo_metric_range

__all__ = ["PseudoMetricRange", "TeacherConfig", "disparity01_to_depth", "pseudo_metric", "pseudo_metric_range"]
