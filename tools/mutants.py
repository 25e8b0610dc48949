"""Deliberate errors in the editing engine (src/ipfacediff/diffusion/) for tools/mutation_check.py.

Each mutant: a name, why it is a plausible bug, exact (file, search, replace) edits applied to a COPY
of src/ (every search text must occur exactly once, or the check fails loudly: update the pair after a
refactor), and the engine tests that must catch it, fastest first (run with -x; the first failure
kills). Keep the tests behavioural (the reference tests compare maths, not function names).
"""

from __future__ import annotations

from dataclasses import dataclass

REF = "tests/test_engine_reference.py"
STEPS = f"{REF}::test_edit_steps_match_reference_per_layer"  # ours vs the float64 reference, per step
END2END = f"{REF}::test_whole_edit_matches_reference_end_to_end"
INVERSION = f"{REF}::test_inversion_matches_reference"
PROP = "tests/test_propagation.py"
BOUNDED = "tests/test_bounded_attention.py"
ATTN = "tests/test_attention.py"
INJ = "tests/test_injection.py"

ATT, PRO, INJF, PIP, INV, LAT = (f"ipfacediff/diffusion/{m}.py" for m in ("attention", "propagation", "injection", "pipeline", "inversion", "latents"))


@dataclass(frozen=True)
class Mutant:
    name: str
    why: str
    edits: tuple[tuple[str, str, str], ...]  # (file under src/, search, replace)
    tests: tuple[str, ...]


MUTANTS: list[Mutant] = [
    Mutant("per_frame_keyframe_attention", "keyframe edit pass attends within each frame instead of jointly across keyframes",
           ((ATT, "out = self._out(attn, joint_attention(q, k, v, attn.heads, st.groups, st.chunk, attn.scale))",
             "out = self._out(attn, frame_attention(q, k, v, attn.heads, st.chunk, attn.scale))"),),
           (STEPS,)),
    Mutant("cfg_halves_share_keyframes", "joint attention over both CFG halves at once (negative and prompt keyframes mixed)",
           ((ATT, "joint_attention(q, k, v, attn.heads, st.groups, st.chunk, attn.scale)",
             "joint_attention(q, k, v, attn.heads, 1, st.chunk, attn.scale)"),),
           (STEPS,)),
    Mutant("swapped_cfg_halves", "guidance pushes toward the negative prompt (halves unpacked in the wrong order)",
           ((PIP, "eps_u, eps_c = eps.chunk(2)", "eps_c, eps_u = eps.chunk(2)"),),
           (STEPS,)),
    Mutant("keyframes_drawn_once", "keyframes drawn at the first step and reused, not re-drawn per step",
           ((PIP, "kf = sample_keyframes(N, cfg.keyframe_interval, generator)",
             "kf = kf if i else sample_keyframes(N, cfg.keyframe_interval, generator)"),),
           (STEPS,)),
    Mutant("correspondences_from_edited_video", "nearest neighbours found in the edit pass's features, not the original video's",
           ((ATT, "            st.kf_features[self.name] = torch.cat([st.kf_features[self.name], x]) if st.carried else x\n", "            pass\n"),
            (ATT, "            st.corr[self.name] = correspondences(x, st.kf_features[self.name], st.plan, st.keyframes, st.chunk)\n",
             "            pass\n"),
            (ATT, "                st.kf_out[self.name] = cat_groups(st.kf_out[self.name], out, st.groups) if st.carried else out\n",
             "                st.kf_out[self.name] = cat_groups(st.kf_out[self.name], out, st.groups) if st.carried else out\n"
             "                st.kf_features[self.name] = x[-len(x) // st.groups :]\n"),
            (ATT, "        idx_prev, idx_next = st.corr[self.name]\n",
             "        idx_prev, idx_next = correspondences(x[-len(x) // G :], st.kf_features[self.name], st.plan, st.keyframes, st.chunk)\n")),
           (STEPS,)),
    Mutant("qk_threshold_off_by_one", "q/k injected for one step more than int(steps * pnp_attn_t)",
           ((PIP, "i < n_qk, i < n_f", "i <= n_qk, i < n_f"),),
           (STEPS,)),
    Mutant("resblock_threshold_off_by_one", "resblock features injected for one step more than int(steps * pnp_f_t)",
           ((PIP, "i < n_qk, i < n_f", "i < n_qk, i <= n_f"),),
           (STEPS,)),
    Mutant("resblock_on_qk_schedule", "resblock injection follows the q/k schedule (50%) instead of pnp_f_t (80%)",
           ((INJF, "if st.role == \"off\" or not st.inject_f:", "if st.role == \"off\" or not st.inject_qk:"),),
           (STEPS,)),
    Mutant("wrong_attention_layers", "q/k injected into up_blocks[1].attentions[0, 1] instead of [1, 2]",
           ((INJF, "PNP_ATTN_BLOCKS = {1: (1, 2), 2: (0, 1, 2), 3: (0, 1, 2)}", "PNP_ATTN_BLOCKS = {1: (0, 1), 2: (0, 1, 2), 3: (0, 1, 2)}"),),
           (f"{INJ}::test_pnp_layers_are_decoder_blocks_4_to_11", STEPS)),
    Mutant("wrong_resblock", "features injected at up_blocks[1].resnets[2] instead of resnets[1]",
           ((INJF, 'PNP_RESNET = "up_blocks.1.resnets.1"', 'PNP_RESNET = "up_blocks.1.resnets.2"'),),
           (STEPS,)),
    Mutant("v_injected_instead_of_k", "the identity branch's q and v are injected (PnP injects q and k)",
           ((ATT, "            st.qk[self.name] = (q, k)\n", "            st.qk[self.name] = (q, v)\n"),
            (ATT, "            q, k = expand_groups(q_src, st.groups), expand_groups(k_src, st.groups)\n",
             "            q, v = expand_groups(q_src, st.groups), expand_groups(k_src, st.groups)\n")),
           (STEPS,)),
    Mutant("only_q_injected", "only q injected, the directional branch keeps its own k",
           ((ATT, "            q, k = expand_groups(q_src, st.groups), expand_groups(k_src, st.groups)\n",
             "            q = expand_groups(q_src, st.groups)\n"),),
           (STEPS,)),
    Mutant("swapped_blend_weights", "eq. 4 weights swapped: the farther keyframe gets the larger weight",
           ((PRO, "w_prev = torch.where(single, torch.ones_like(total), d_next / total.clamp(min=1))",
             "w_prev = torch.where(single, torch.ones_like(total), d_prev / total.clamp(min=1))"),),
           (f"{PROP}::test_blend_weights_follow_eq4_hand_computed", STEPS)),
    Mutant("past_keyframe_only", "propagation copies the nearest past keyframe only (no future keyframe, no blend)",
           ((PRO, "out = gather_tokens(values, plan.prev.to(values.device), idx_prev) * w_prev",
             "out = gather_tokens(values, plan.prev.to(values.device), idx_prev)"),
            (PRO, "    if bool(two.any()):\n        out = out + gather_tokens(", "    if False:\n        out = out + gather_tokens(")),
           (STEPS,)),
    Mutant("dot_product_neighbours", "nearest neighbours by dot product (keys not normalised) instead of cosine",
           ((PRO, "k = torch.nn.functional.normalize(keys.to(dtype), dim=-1)", "k = keys.to(dtype)"),),
           (f"{PROP}::test_nearest_neighbours_match_float64_bruteforce_chunked_or_not", STEPS)),
    Mutant("keyframe_interval_off_by_one", "keyframe blocks of interval + 1 frames",
           ((PRO, "starts = torch.arange(0, n_frames, interval)", "starts = torch.arange(0, n_frames, interval + 1)"),),
           (f"{PROP}::test_keyframes_one_per_block_every_block_seeded", STEPS)),
    Mutant("source_pass_wrong_branch", "source pass runs the edit branch instead of the identity branch",
           ((PIP, "with self.branches.use(method.source_branch) as unet,", "with self.branches.use(method.edit_branch) as unet,"),),
           (STEPS,)),
    Mutant("source_pass_wrong_step", "source pass reads the inverted latents of the next step",
           ((PIP, "source_latents(i, sel), t,", "source_latents(min(i + 1, steps), sel), t,"),),
           (STEPS,)),
    Mutant("source_pass_edit_prompt", "source pass conditioned on the edit prompt instead of the inversion prompt",
           ((PIP, "unet(src, t, encoder_hidden_states=source.expand(B, -1, -1))", "unet(src, t, encoder_hidden_states=cond.expand(B, -1, -1))"),),
           (STEPS,)),
    Mutant("wrong_ddim_alpha_index", "inversion step uses the noise level of the neighbouring timestep",
           ((INV, "alphas = [float(acp[t]) for t in timesteps]", "alphas = [float(acp[t - 1]) for t in timesteps]"),),
           (INVERSION,)),
    Mutant("inversion_noise_at_wrong_timestep", "inversion predicts noise with the previous (less noisy) timestep",
           ((INV, "x = ddim_step(x, _eps(unet, x, timesteps[i], cond), alphas[i + 1], alphas[i])",
             "x = ddim_step(x, _eps(unet, x, timesteps[min(i + 1, len(timesteps) - 1)], cond), alphas[i + 1], alphas[i])"),),
           (INVERSION,)),
    Mutant("wrong_latent_scaling_encode", "VAE latents divided by the scaling factor instead of multiplied",
           ((LAT, "return torch.cat(out) * vae.config.scaling_factor", "return torch.cat(out) / vae.config.scaling_factor"),),
           (INVERSION,)),
    Mutant("bounded_keyframes_ignore_anchors", "bounded mode: a keyframe group attends to its own keyframes only (anchors' keys/values dropped)",
           ((ATT, "            k, v = cat_groups(k, kv[0], st.groups), cat_groups(v, kv[1], st.groups)\n", "            pass\n"),),
           (f"{BOUNDED}::test_keyframe_keys_are_own_group_then_anchors_and_propagation_uses_the_nearest_keyframes",)),
    Mutant("bounded_window_plan_global_positions", "bounded mode: propagation reads window keyframes at global keyframe positions",
           ((PRO, "BlendPlan(p.frames, p.prev - held, p.next - held, p.w_prev, p.w_next)", "BlendPlan(p.frames, p.prev, p.next, p.w_prev, p.w_next)"),),
           (f"{BOUNDED}::test_windows_cover_every_frame_once_with_the_global_blend",
            f"{BOUNDED}::test_keyframe_keys_are_own_group_then_anchors_and_propagation_uses_the_nearest_keyframes")),
    Mutant("wrong_latent_scaling_decode", "latents multiplied by the scaling factor before decoding instead of divided",
           ((LAT, "vae.decode(b.to(vae.device, vae.dtype) / vae.config.scaling_factor)", "vae.decode(b.to(vae.device, vae.dtype) * vae.config.scaling_factor)"),),
           (END2END,)),
]
