"""Reference of MOVA's flow-matching pair scheduler and sampler loop (tests only).

Float32 on purpose: the official grid is built with torch.linspace in float32 and the official loop keeps
latents, the CFG mix and the Euler update in float32. Conventions and sources: tests/reference/NOTES.md.
"""

from __future__ import annotations

import torch


def flow_match_grid(num_steps: int, *, shift: float, sigma_max: float = 1.0, sigma_min: float = 0.003 / 1.002,
                    extra_one_step: bool = True, num_train_timesteps: int = 1000):
    """-> (timesteps, sigmas), float32. linspace(start, sigma_min, n+1)[:-1] (extra_one_step),
    sigma' = shift*s/(1+(shift-1)*s), timestep = num_train_timesteps*sigma'."""
    start = sigma_min + (sigma_max - sigma_min) * 1.0
    if extra_one_step:
        s = torch.linspace(start, sigma_min, num_steps + 1)[:-1]
    else:
        s = torch.linspace(start, sigma_min, num_steps)
    s = shift * s / (1 + (shift - 1) * s)
    return s * num_train_timesteps, s


def sigma_of(t: float, train_timesteps: torch.Tensor, train_sigmas: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour lookup of a timestep in the 1000-point training grid (first index on ties)."""
    idx = torch.argmin((train_timesteps - torch.tensor(float(t))).abs())
    return train_sigmas[idx]


def reference_sample(velocity_fn, *, video_noise, audio_noise, y, context, negative_context, num_steps: int,
                     guidance_scale: float, shift: float, boundary_ratio: float, sigma_min: float = 0.003 / 1.002,
                     num_train_timesteps: int = 1000, start_step: int = 0, stop_step: int | None = None):
    """Official sampler loop. velocity_fn(expert, video_in (1,36,..), audio (1,C,L), context, t_v (1,), t_a (1,))
    -> (video_v, audio_v); expert 0 = video_dit (t >= boundary), 1 = video_dit_2. CFG mix and Euler in float32.
    Returns (video_latents, audio_latents, experts_used)."""
    timesteps, _ = flow_match_grid(num_steps, shift=shift, sigma_min=sigma_min,
                                   num_train_timesteps=num_train_timesteps)
    grid_t, grid_s = flow_match_grid(num_train_timesteps, shift=shift, sigma_min=sigma_min,
                                     num_train_timesteps=num_train_timesteps)
    boundary = boundary_ratio * num_train_timesteps
    video = video_noise.to(torch.float32).clone()
    audio = audio_noise.to(torch.float32).clone()
    expert = 0
    used = []
    stop = num_steps if stop_step is None else stop_step
    for i in range(num_steps):
        t = timesteps[i]
        if expert == 0 and t.item() < boundary:
            expert = 1
        if i < start_step:
            continue
        if i >= stop:
            break
        used.append(expert)
        tt = t.reshape(1)
        x_in = torch.cat([video, y.to(torch.float32)], dim=1)
        pv, pa = velocity_fn(expert, x_in, audio, context, tt, tt)
        if guidance_scale != 1.0:
            nv, na = velocity_fn(expert, x_in, audio, negative_context, tt, tt)
            pv, pa, nv, na = (z.to(torch.float32) for z in (pv, pa, nv, na))
            vel_v = nv + guidance_scale * (pv - nv)
            vel_a = na + guidance_scale * (pa - na)
        else:
            vel_v, vel_a = pv.to(torch.float32), pa.to(torch.float32)
        s_from = sigma_of(t, grid_t, grid_s)
        s_to = sigma_of(timesteps[i + 1], grid_t, grid_s) if i + 1 < num_steps else torch.tensor(0.0)
        video = video + vel_v * (s_to - s_from)
        audio = audio + vel_a * (s_to - s_from)
    return video, audio, used
