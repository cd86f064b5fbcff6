"""A user's own stages, in their own module, referenced from YAML."""

import msgspec

from pipeflow import Frames, Stage, stage
from pipeflow.frames import AudioFrame, EndOfStream, TextInput


class ShoutOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    times: int = 1
    """How many exclamation marks."""


@stage()
async def shout(frames: Frames, options: ShoutOptions) -> Frames:
    """Upper-cases text input."""
    async for frame in frames:
        if isinstance(frame, TextInput):
            frame = TextInput(text=frame.text.upper() + "!" * options.times)
        yield frame


class Greeter(Stage):
    """Emits a greeting, then passes everything on."""

    async def process(self, frames: Frames) -> Frames:
        yield TextInput(text="hello")
        yield AudioFrame(pcm=b"\x01\x00" * 160, sample_rate=8000)
        yield EndOfStream()
        async for frame in frames:
            yield frame


class Collect(Stage):
    """Writes the texts it sees to a file."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        path: str
        """Where to write."""

    async def process(self, frames: Frames) -> Frames:
        seen = []
        async for frame in frames:
            if isinstance(frame, TextInput):
                seen.append(frame.text)
            yield frame
        with open(self.options.path, "w") as fh:
            fh.write("\n".join(seen))
