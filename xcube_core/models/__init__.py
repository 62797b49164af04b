"""Models: per-level sparse structure VAE, diffusion U-Net, refinement network, text encoders."""
