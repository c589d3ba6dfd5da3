"""The ``azguard`` diagnostic commands (env, doctor, drill, run) and their helpers.

They sit on top of the runtime and import it; nothing in the runtime imports
them, so a guarded program never loads a diagnostic tool.  None of this is
public API: the commands and their output are the contract, not these modules.
"""

from typing import List

__all__: List[str] = []
