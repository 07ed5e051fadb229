"""The public names of ``setseq.video``, under the module name earlier code imports (``from setseq import data``).

New code imports ``setseq.video``; the video package's modules hold the behaviour and the docs.
"""

from setseq.video import *  # noqa: F403
from setseq.video import __all__  # noqa: F401
from setseq.video.captions import MOTION_TOKEN  # noqa: F401
