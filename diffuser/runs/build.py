"""Config fields → model: the one constructor, used by train.py for a new run and by load_run for a saved one."""

from __future__ import annotations

from diffuser.baselines.bc import MLPPolicy
from diffuser.baselines.dynamics import ForwardDynamics
from diffuser.baselines.iql import IQL
from diffuser.baselines.inverse_dynamics import InverseDynamics
from diffuser.config import DiffusionConfig, IQLConfig, ModelConfig, check_network
from diffuser.diffusion.gaussian import GaussianDiffusion, ValueDiffusion
from diffuser.diffusion.normalization import Normalizer
from diffuser.models import TemporalTransformer, TemporalUnet, ValueFunction

MODEL_KINDS = ("diffusion", "value", "bc", "iql", "invdyn", "dynamics")


def build_model(
    kind: str,
    normalizer: Normalizer,
    *,
    horizon: int,
    observation_dim: int,
    action_dim: int,
    model: ModelConfig,
    diffusion: DiffusionConfig,
    iql: IQLConfig | None = None,
    discount: float = 0.99,
) -> GaussianDiffusion | MLPPolicy | IQL | InverseDynamics | ForwardDynamics:
    """GaussianDiffusion over a TemporalUnet (or, with model.network transformer, a TemporalTransformer),
    ValueDiffusion over a ValueFunction, the BC MLPPolicy, or IQL's critics and policy (``iql`` settings and
    ``discount``, env.discount, for kind iql only), the inverse dynamics MLP a = f(s, s'), or the forward dynamics
    MLP (s, a) → (s', r).

    A config.yaml written before model.network existed reads as network unet (ModelConfig's default)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind '{kind}'; valid: {list(MODEL_KINDS)}")
    check_network(model.network, kind)
    if kind == "bc":
        return MLPPolicy(normalizer, observation_dim=observation_dim, action_dim=action_dim, hidden_dim=model.dim)
    if kind == "invdyn":
        return InverseDynamics(normalizer, observation_dim=observation_dim, action_dim=action_dim,
                               hidden_dim=model.dim)
    if kind == "dynamics":
        return ForwardDynamics(normalizer, observation_dim=observation_dim, action_dim=action_dim,
                               hidden_dim=model.dim)
    if kind == "iql":
        iql = iql or IQLConfig()
        return IQL(normalizer, observation_dim=observation_dim, action_dim=action_dim, hidden_dim=model.dim,
                   discount=discount, expectile=iql.expectile, beta=iql.beta, target_update=iql.target_update)
    transition_dim = observation_dim + action_dim
    if model.network == "transformer":
        net = TemporalTransformer(horizon=horizon, transition_dim=transition_dim, width=model.width,
                                  depth=model.depth, heads=model.heads)
    else:
        net_cls = ValueFunction if kind == "value" else TemporalUnet
        net = net_cls(
            horizon=horizon,
            transition_dim=transition_dim,
            dim=model.dim,
            dim_mults=tuple(model.dim_mults),
            attention=model.attention,
        )
    wrapper = ValueDiffusion if kind == "value" else GaussianDiffusion
    return wrapper(
        net,
        normalizer,
        horizon=horizon,
        observation_dim=observation_dim,
        action_dim=action_dim,
        n_diffusion_steps=diffusion.n_diffusion_steps,
        beta_schedule=diffusion.beta_schedule,
        predict_epsilon=diffusion.predict_epsilon,
        clip_denoised=diffusion.clip_denoised,
        action_weight=diffusion.action_weight,
        loss_discount=diffusion.loss_discount,
    )
