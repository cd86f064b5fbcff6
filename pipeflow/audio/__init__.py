"""Audio building blocks free of the stage machinery: PCM helpers, WAV, G.711, VAD, pacing.

Internal audio is PCM16 little-endian mono bytes with a sample rate; these
modules convert to and from it and work on numpy views of it.
"""
