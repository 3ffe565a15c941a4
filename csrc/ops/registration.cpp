// The one op registry: every schema of torch.ops.fastcrnn, and the Python module fastcrnn._C.
// Device implementations register themselves in ops/<family>.cpp and ops/<family>_cuda.cpp.
#include <torch/extension.h>
#include <torch/library.h>

#include "kernels/cpu_isa.h"
#include "ops/buffer_cache.h"

#ifndef FASTCRNN_CUDA_ARCHS
#define FASTCRNN_CUDA_ARCHS ""
#endif

TORCH_LIBRARY(fastcrnn, m) {
  // ---- CTC greedy decoding (ops/decode.cpp) ----
  m.def(
      "greedy_decode(Tensor log_probs, Tensor input_lengths, int blank, bool logits, "
      "bool validate) -> (Tensor tokens, Tensor lengths, Tensor token_probs, "
      "Tensor token_frames)");
  // ---- CTC prefix beam search (ops/beam.cpp; the algorithm in kernels/beam.h) ----
  // Runs on the host. ctc_beam_search reads dense (T, N, C) scores; ctc_beam_search_candidates
  // each frame's K candidates (what a CUDA input is pruned to on the device).
  m.def(
      "ctc_beam_search(Tensor log_probs, Tensor input_lengths, int blank, bool logits, "
      "int beam_width, int nbest, int max_tokens, float? token_min_logp, "
      "float? beam_prune_logp, Tensor? lm_keys, Tensor? lm_values, Tensor? lm_links, "
      "Tensor? lm_token_ids, int lm_vocab_size, int lm_begin_state, int lm_eos, float lm_weight, "
      "float word_bonus, Tensor? lexicon_nodes, Tensor? lexicon_edges, int word_delimiter, "
      "Tensor? hotword_nodes, Tensor? hotword_edges, float hotword_weight, Tensor? lm_word_ids) "
      "-> (Tensor tokens, Tensor lengths, Tensor scores, Tensor ctc_scores, "
      "Tensor token_frames, Tensor token_probs)");
  m.def(
      "ctc_beam_search_candidates(Tensor candidate_tokens, Tensor candidate_logp, "
      "Tensor blank_logp, Tensor input_lengths, int num_classes, int blank, int beam_width, "
      "int nbest, float? token_min_logp, float? beam_prune_logp, Tensor? lm_keys, "
      "Tensor? lm_values, Tensor? lm_links, Tensor? lm_token_ids, int lm_vocab_size, "
      "int lm_begin_state, int lm_eos, float lm_weight, float word_bonus, "
      "Tensor? lexicon_nodes, Tensor? lexicon_edges, int word_delimiter, Tensor? hotword_nodes, "
      "Tensor? hotword_edges, float hotword_weight, Tensor? lm_word_ids) -> (Tensor tokens, "
      "Tensor lengths, Tensor scores, Tensor ctc_scores, Tensor token_frames, "
      "Tensor token_probs)");
  // ---- CTC forced alignment (ops/align.cpp; shapes in kernels/align.h) ----
  m.def(
      "ctc_forced_align(Tensor log_probs, Tensor targets, Tensor input_lengths, "
      "Tensor target_lengths, int blank, bool validate) -> (Tensor labels, "
      "Tensor frame_log_probs, Tensor token_starts, Tensor token_ends, Tensor token_log_probs, "
      "Tensor scores, Tensor aligned)");
  // ---- CTC loss (ops/ctc.cpp; autograd and the ctc_loss composite: ops/ctc_autograd.cpp) ----
  // ctc_loss: the whole loss in one call; reduction as at::Reduction (0 none, 1 mean, 2 sum).
  m.def(
      "ctc_loss(Tensor log_probs, Tensor targets, Tensor input_lengths, Tensor target_lengths, "
      "int blank, int reduction, bool zero_infinity, bool from_logits, bool validate) -> Tensor");
  m.def(
      "ctc_loss_forward(Tensor log_probs, Tensor targets, Tensor input_lengths, "
      "Tensor target_lengths, int blank, bool from_logits, bool zero_infinity, bool validate) -> "
      "(Tensor nll, Tensor log_alpha, Tensor norms)");
  m.def(
      "ctc_loss_backward(Tensor grad, Tensor log_probs, Tensor targets, Tensor input_lengths, "
      "Tensor target_lengths, Tensor nll, Tensor log_alpha, Tensor norms, int blank, "
      "bool from_logits, bool zero_infinity) -> Tensor");
  // The CUDA op's value checks (one device flag, one host sync) on any device; returns the
  // longest target length. For the tests: the CPU op itself checks with plain loops.
  m.def(
      "_ctc_check_values(Tensor input_lengths, Tensor targets, Tensor target_lengths, int T, "
      "int C, int blank) -> int");
  // ---- LSTM (checks: ops/lstm.cpp; recurrence: ops/lstm_recurrence.cpp; the cell's
  // autograd: ops/lstm_autograd.cpp) ----
  // One layer, one (D=1) or both (D=2) directions; see ops/lstm.h for shapes. The last three
  // outputs are the saved activations / states that lstm_layer_backward needs (empty when
  // save_for_backward is false).
  m.def(
      "lstm_layer(Tensor input, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, "
      "Tensor? bias, Tensor? lengths, bool save_for_backward=True) -> (Tensor output, "
      "Tensor h_n, Tensor c_n, Tensor acts, Tensor hs, Tensor cs)");
  m.def(
      "lstm_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor input, "
      "Tensor weight_ih, Tensor weight_hh, Tensor? lengths, Tensor acts, Tensor hs, Tensor cs) "
      "-> (Tensor grad_input, Tensor grad_h0, Tensor grad_c0, Tensor grad_weight_ih, "
      "Tensor grad_weight_hh, Tensor grad_bias)");
  // Inference (no autograd) on weights packed by pack_linear_weight (see ops/lstm.h).
  m.def(
      "lstm_layer_packed(Tensor input, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, "
      "Tensor? bias) -> (Tensor output, Tensor h_n, Tensor c_n)");
  m.def(
      "lstm_cell(Tensor input, Tensor hx, Tensor cx, Tensor weight_ih, Tensor weight_hh, "
      "Tensor? bias) -> (Tensor h, Tensor c, Tensor acts)");
  m.def(
      "lstm_cell_backward(Tensor grad_h, Tensor grad_c, Tensor input, Tensor hx, Tensor cx, "
      "Tensor weight_ih, Tensor weight_hh, Tensor acts) -> "
      "(Tensor grad_input, Tensor grad_hx, Tensor grad_cx, Tensor grad_weight_ih, "
      "Tensor grad_weight_hh, Tensor grad_bias)");
  // ---- products with a weight packed once, for inference (ops/packed_gemm.cpp) ----
  m.def("pack_linear_weight(Tensor weight) -> Tensor");
  m.def("linear_packed(Tensor input, Tensor weight, int out_features, Tensor? bias) -> Tensor");
  // ---- 3x3 convolutions for inference (ops/conv.cpp; shapes in kernels/conv.h) ----
  m.def("winograd_weight(Tensor weight) -> Tensor");
  m.def(
      "winograd_conv3x3(Tensor input, Tensor weight, Tensor? scale, Tensor? shift, "
      "float? negative_slope, int? out_channels=None) -> Tensor");
  m.def(
      "conv3x3_direct(Tensor input, Tensor weight, Tensor? scale, Tensor? shift, "
      "float? negative_slope, bool max_pool) -> Tensor");
}

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
  info["version"] = FASTCRNN_VERSION;
  info["torch_version"] = FASTCRNN_TORCH_VERSION;
#ifdef FASTCRNN_WITH_CUDA
  info["cuda"] = true;
  info["cuda_archs"] = FASTCRNN_CUDA_ARCHS;
#else
  info["cuda"] = false;
  info["cuda_archs"] = "";
#endif
#if defined(__clang__)
  info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info["compiler"] = std::string("gcc ") + __VERSION__;
#else
  info["compiler"] = "unknown";
#endif
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  info["cpu_isas_built"] = FASTCRNN_CPU_ISAS;
  info["cpu_isa"] = fastcrnn::cpu::isa_name(fastcrnn::cpu::active_isa());
  info["cplusplus"] = static_cast<long>(__cplusplus);
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastcrnn compiled kernels; the ops live in torch.ops.fastcrnn";
  m.def("build_info", &build_info, "How this extension was built (dict)");
  m.def("cpu_cache_info", [] {
    const auto [held, limit] = fastcrnn::ops::cpu_cache_held_and_limit();
    pybind11::dict info;
    info["held_bytes"] = held;
    info["limit_bytes"] = limit;
    return info;
  });
  m.def("set_cpu_cache_limit", [](size_t bytes) { fastcrnn::ops::set_cpu_cache_limit(bytes); });
  m.def("empty_cpu_cache", &fastcrnn::ops::empty_cpu_cache);
}
