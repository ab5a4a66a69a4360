"""The gate: were clean and adversarial accuracy preserved on the exported engine itself?

- :mod:`.config`: the recipe's ``verify`` section (attacks, thresholds);
- :mod:`.reference`: the fp32 model an engine is compared with, loaded from a checkpoint, an ONNX file or a
  ``torch.export`` program without a full unpickler;
- :mod:`.measure`: AutoAttack's cascade on the reference and on the engine (gradients through the replica of the
  engine's own graph, decisions by the engine);
- :mod:`.gate`: the checks that pass or fail it, and the warnings;
- :mod:`.report`: JSON, Markdown, JUnit XML and the command's lines;
- :mod:`.runner`: files in, reports out (:func:`verify_run`).

The CLI exits 0 (pass), 1 (robustness not preserved, or none to preserve) or 2 (refused: bad input, an engine whose
provenance or replica cannot be trusted). docs/evaluation.md says which attacks make the engine's figure and why.
"""
from __future__ import annotations

from .config import CONSUMES, READS, WRITES, VerifyConfig  # noqa: F401
from .report import VerifyReport, to_junit, to_lines, to_markdown, verdict  # noqa: F401
from .runner import report_files, reports_dir, verify_engine, verify_run  # noqa: F401
