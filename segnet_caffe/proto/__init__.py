"""Caffe's protobuf schema (caffe.proto, BVLC 1.0 + the SegNet fork) and its generated module."""
from . import caffe_pb2

__all__ = ["caffe_pb2"]
