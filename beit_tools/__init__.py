"""beit-tools: turn original unilm BEiT checkpoints into faithful Hugging Face transformers models."""

__version__ = "0.1.0"
