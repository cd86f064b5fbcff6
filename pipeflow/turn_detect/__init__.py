"""Turn taking: when the caller's turn ends, and when their speech interrupts the agent.

- ``model``: the end-of-turn model interface and the offline prosody model;
- ``tracker``: the I/O-free turn tracker the ``end_of_turn`` stage runs;
- ``lexicon``: fillers, short answers and backchannels;
- ``commands``: the spotter that tells "stop" from "mhmm" over the agent;
- ``prosody``: pitch and energy at the end of speech;
- ``options``: the YAML options.
"""

from pipeflow.turn_detect.commands import CommandSpotter
from pipeflow.turn_detect.model import EndOfTurnModel, ProsodyModel, TurnContext
from pipeflow.turn_detect.options import TurnOptions
from pipeflow.turn_detect.tracker import Decode, TurnTracker

__all__ = ["CommandSpotter", "Decode", "EndOfTurnModel", "ProsodyModel", "TurnContext",
           "TurnOptions", "TurnTracker"]
