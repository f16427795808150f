"""Pretrainer: a self-hosted REST service for pre-training and transfer."""

__version__ = "0.1.0"
