"""batchgen: resumable batch image generation on Segmind's asynchronous (v2) serverless API."""

__version__ = "0.1.0"
