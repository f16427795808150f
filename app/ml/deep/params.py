"""Params of the self-supervised family: the shared training knobs and each algorithm's own.

Torch-free: these models are the JSON Schema of GET /v1/algorithms, which the API builds at start.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, WithJsonSchema

from app.ml.base import Params

SEED_MAX = 2**32 - 1
DEVICES_MAX = 1024


def _devices(v: Any) -> int | str:
    # One plain check, so that every refusal is an error of params.devices itself.
    if v == "all":
        return "all"
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= DEVICES_MAX:
        raise ValueError(f"must be an integer from 1 to {DEVICES_MAX}, or 'all'")
    return v


Devices = Annotated[int | Literal["all"], PlainValidator(_devices), WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 1, "maximum": DEVICES_MAX}, {"const": "all"}]})]
Width = Annotated[int, Field(ge=1, le=8192)]
# vae: see bench/vae_digits.py for the figures these defaults were chosen by.
# The learned-variance likelihood already keeps the latent space in use: on digits a 10-epoch
# warm-up cost .03 of probe accuracy at 60 epochs, so both guards are opt-in.
KL_WARMUP_EPOCHS = 0
FREE_BITS = 0.0


def validation_rows(n_rows: int, fraction: float) -> int:
    """How many of n_rows the seeded validation split holds out (never all of them)."""
    return min(round(n_rows * fraction), n_rows - 1) if fraction > 0 else 0


class TrainParams(Params):
    """What every PyTorch training job takes: the loop, the optimizer, the device, the split."""

    epochs: int = Field(20, ge=1, le=10_000, description="Passes over the training rows.")
    batch_size: int = Field(
        128, ge=1, le=65_536,
        description="Rows per optimisation step (clamped to the number of training rows).")
    learning_rate: float = Field(1e-3, gt=0, le=10, description="The optimizer's step size.")
    weight_decay: float = Field(
        0.0, ge=0, le=10, description="Weight decay: decoupled with adamw (0 is plain Adam), "
        "an L2 term in the gradient with adam and sgd.")
    optimizer: Literal["adamw", "adam", "sgd"] = Field(
        "adamw", description="adamw: Adam with decoupled weight decay (torch AdamW); adam: "
        "torch Adam; sgd: stochastic gradient descent with momentum.")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only: the momentum factor.")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="Learning rate over the run (after any warmup): constant, or "
        "cosine annealing from learning_rate to 0 at the last step.")
    warmup_epochs: int = Field(
        0, ge=0, le=1000, description="Linear learning-rate warmup from 0 over this many "
        "epochs, before the schedule.")
    seed: int = Field(
        0, ge=0, le=SEED_MAX,
        description="Seeds weight init, the validation split, shuffling and every random draw; "
        "on CPU the same seed gives the same model.")
    devices: Devices = Field(
        1, description="Processes one job trains on, data-parallel: GPUs on a GPU worker (NCCL), "
        "processes on a CPU worker (gloo); 'all' takes every one the worker has. batch_size "
        "stays the global batch: each process trains on batch_size / devices rows per step.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' trains on a CUDA GPU when the worker has one, else on CPU; "
        "'cuda' fails the job if the worker has none.")
    validation_fraction: float = Field(
        0.1, ge=0, le=0.5,
        description="Share of the rows held out (seeded) to compute val_loss after each epoch; "
        "0 trains on every row and reports no val_loss.")
    early_stopping_patience: int = Field(
        0, ge=0, le=10_000,
        description="Stop after this many epochs without a better val_loss and keep the best "
        "epoch's weights; 0 turns early stopping off.")
    standardize: bool = Field(
        True,
        description="Tabular: z-score every feature with the training rows' mean and std. "
        "Images: normalise every channel with the training images' mean and std (after "
        "scaling pixels to [0, 1]). Saved with the model and applied to every request.")


class MLPParams(Params):
    """The layers of the fully connected parts (defaults: today's plain ReLU MLP)."""

    activation: Literal["relu", "gelu", "silu"] = Field(
        "relu", description="Activation of every hidden layer (convolutions included).")
    dropout: float = Field(0.0, ge=0, lt=1,
                           description="Dropout after each hidden fully connected layer, "
                           "training only.")
    batch_norm: bool = Field(False, description="Batch normalisation before each hidden "
                             "fully connected layer's activation.")

    def mlp_arch(self) -> dict[str, Any]:
        """The keys config.json's architecture records for these layers."""
        return {"activation": self.activation, "dropout": self.dropout,
                "batch_norm": self.batch_norm}


HIDDEN_DIMS = ("Widths of the hidden fully connected layers, first to last. Tabular: the "
               "MLP encoder (the decoder/generator mirrors it). Images: the layers between the "
               "convolutional stack and the output.")


def hidden_dims_field(default: list[int], *, min_length: int = 1,
                      more: str = "") -> list[int]:
    """The hidden_dims param: one list of widths, shared by the tabular MLP and the image head
    (more: what an algorithm adds to the description)."""
    # A plain (copied per instance by pydantic) default, so the JSON Schema shows it.
    return Field(list(default), min_length=min_length, max_length=8,
                 description=HIDDEN_DIMS + more)


BASE_CHANNELS = Field(
    32, ge=4, le=256,
    description="Images only: channels of the first convolution; each stride-2 stage doubles "
    "them (at most 8x).")


class AutoencoderParams(TrainParams, MLPParams):
    """Params of autoencoder."""

    latent_dim: int = Field(16, ge=1, le=4096, description="Size of the code (the embedding).")
    hidden_dims: list[Width] = hidden_dims_field(
        [256, 128], min_length=0,
        more=" [] makes the classic single-layer autoencoder: the code is the one hidden "
        "layer, activation(Linear(input, latent_dim)) (ReLU by default), and the decoder is "
        "output_activation(Linear(latent_dim, input)): latent_dim 128 on 784 pixels is "
        "784 -> 128 -> 784. With hidden layers the code itself is linear.")
    base_channels: int = BASE_CHANNELS
    noise: float = Field(
        0.0, ge=0, le=10,
        description="Std of Gaussian noise added to the (normalised) inputs during training: "
        "a denoising autoencoder. 0 trains a plain autoencoder.")
    output_activation: Literal["linear", "sigmoid"] = Field(
        "linear", description="The decoder's last activation for rows: 'linear' (any value) "
        "or 'sigmoid' (values in [0, 1], for inputs in [0, 1] with standardize false). Image "
        "decoders always end in a sigmoid to [0, 1] pixels.")
    loss: Literal["mse", "bce"] = Field(
        "mse", description="Reconstruction loss, and the per-row reconstruction_error predict "
        "gives: 'mse' mean squared error in the model's normalised space; 'bce' binary "
        "cross-entropy (mean per value) for inputs in [0, 1]. Rows: bce needs "
        "output_activation 'sigmoid', standardize false and every feature in [0, 1] "
        "(checked against the dataset at submit). Images: pixels are always in [0, 1].")


class VAEParams(TrainParams, MLPParams):
    """Params of vae."""

    latent_dim: int = Field(16, ge=1, le=4096,
                            description="Size of the latent space; embed returns the posterior "
                            "mean, generate decodes draws from the N(0, I) prior.")
    hidden_dims: list[Width] = hidden_dims_field([256, 128])
    base_channels: int = BASE_CHANNELS
    beta: float = Field(
        1.0, ge=0, le=1000,
        description="Weight of the KL term (beta-VAE); 1 is the evidence lower bound, larger "
        "values trade reconstruction for a smoother latent space.")
    likelihood: Literal["auto", "gaussian", "learned_gaussian", "bernoulli"] = Field(
        "auto",
        description="The decoder's p(x|z): 'gaussian' (unit variance, in the standardised "
        "space), 'learned_gaussian' (one learned variance), 'bernoulli' (cross-entropy on "
        "[0, 1] pixels; images only). 'auto' is learned_gaussian for images and gaussian for "
        "rows.")
    kl_warmup_epochs: int = Field(
        KL_WARMUP_EPOCHS, ge=0, le=10_000,
        description="The KL weight ramps linearly from beta/n to beta over the first n epochs "
        "(0: beta from the start), so the encoder learns to use the latent space before the "
        "prior pulls it in (against posterior collapse).")
    free_bits: float = Field(
        FREE_BITS, ge=0, le=100,
        description="Nats of KL per latent dimension (batch mean) left unpenalised in "
        "training (Kingma et al. 2016): a floor that keeps dimensions active. 0 turns it off.")


class ContrastiveParams(TrainParams, MLPParams):
    """Params of contrastive."""

    embedding_dim: int = Field(64, ge=1, le=4096,
                               description="Size of the encoder output, which embed returns.")
    projection_dim: int = Field(32, ge=1, le=4096,
                                description="Size of the projection head's output, where the "
                                "loss is computed; the head is used in training only.")
    hidden_dims: list[Width] = hidden_dims_field([256, 128])
    base_channels: int = BASE_CHANNELS
    temperature: float = Field(
        0.5, gt=0, le=10,
        description="Temperature of the NT-Xent (InfoNCE) loss; lower values weigh hard "
        "negatives more.")
    crop_scale_min: float = Field(
        0.6, gt=0, le=1,
        description="Images: smallest area (fraction of the image) of a random resized crop.")
    rotation_degrees: float = Field(10.0, ge=0, le=180,
                                    description="Images: largest random rotation of a view.")
    translate: float = Field(0.1, ge=0, le=0.5,
                             description="Images: largest random shift, as a fraction of the size.")
    color_jitter: float = Field(
        0.2, ge=0, le=1,
        description="Images: largest random brightness shift and contrast change (fraction).")
    flip: bool = Field(False, description="Images: also flip views horizontally at random "
                       "(off by default: digits and text must not be mirrored).")
    mask_fraction: float = Field(
        0.3, ge=0, le=1,
        description="Tabular (SCARF): share of features of a view replaced by the same "
        "feature of a random other row.")
    view_noise: float = Field(
        0.05, ge=0, le=10,
        description="Std of Gaussian noise added to each view (standardised units for tabular, "
        "pixel intensity in [0, 1] for images).")


class GANParams(TrainParams):
    """Params of gan."""

    learning_rate: float = Field(2e-4, gt=0, le=10,
                                 description="Adam step size of both the generator and the "
                                 "discriminator.")
    validation_fraction: float = Field(
        0.0, ge=0, le=0.5,
        description="Ignored by gan: it trains on every row (its losses do not measure sample "
        "quality, so there is nothing to validate or stop early on).")
    early_stopping_patience: int = Field(0, ge=0, le=10_000, description="Ignored by gan.")
    latent_dim: int = Field(32, ge=1, le=4096, description="Size of the generator's noise input.")
    hidden_dims: list[Width] = hidden_dims_field([256, 128])
    base_channels: int = BASE_CHANNELS
