"""Codecs: the interface every codec implements (`base`) and nc's built-in codecs."""
from nc.codecs.base import Codec, CodecDescriptor, Decoder, Encoder, Packet, RatePoint, RateRange

__all__ = ["Codec", "CodecDescriptor", "Decoder", "Encoder", "Packet", "RatePoint", "RateRange"]
