//===- attn-gpu-gen.cpp - Write the PTX of an attn.attention --------------===//
//
// attn-gpu-gen IN.mlir [--chip=sm_90a] [--block-m=64] [-o OUT.ptx]
//              [--decode-o=DECODE.ptx] [--manifest=OUT.json] [--emit-mlir]
//
// Compiles the single attn.attention of IN.mlir with
// compileAttentionForGpu and writes the PTX and a one-line JSON manifest
// (kernel name, block, grid, shared memory, parameter list). The kernels
// under test/integration/gpu/kernels/ are made with it (see gen.sh there).
//
//===----------------------------------------------------------------------===//

#include "attn/Dialect/Attn/IR/AttnDialect.h"
#include "attn/NVGPU/GpuKernel.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"

using namespace mlir;

static llvm::cl::opt<std::string> inputFile(llvm::cl::Positional,
                                            llvm::cl::desc("<input.mlir>"),
                                            llvm::cl::init("-"));
static llvm::cl::opt<std::string> outputFile("o",
                                             llvm::cl::desc("PTX output"),
                                             llvm::cl::init("-"));
static llvm::cl::opt<std::string>
    manifestFile("manifest", llvm::cl::desc("JSON manifest output"),
                 llvm::cl::init(""));
static llvm::cl::opt<std::string> chip("chip", llvm::cl::desc("Target chip"),
                                       llvm::cl::init("sm_90a"));
static llvm::cl::opt<std::string>
    features("features", llvm::cl::desc("PTX ISA feature"),
             llvm::cl::init("+ptx80"));
static llvm::cl::opt<bool> emitMlir(
    "emit-mlir",
    llvm::cl::desc("Run the attn-nvgpu-pipeline pass pipeline on the whole "
                   "module and print it (gpu.module + gpu.binary)"),
    llvm::cl::init(false));
static llvm::cl::opt<int64_t> blockM("block-m",
                                     llvm::cl::desc("Query rows per CTA"),
                                     llvm::cl::init(128));
static llvm::cl::opt<int64_t>
    blockN("block-n",
           llvm::cl::desc("Keys per main-loop iteration (32 or 64; 0: chosen "
                          "per variant)"),
           llvm::cl::init(0));
static llvm::cl::opt<int64_t>
    warpRows("warp-rows", llvm::cl::desc("Query rows per warp (16 or 32)"),
             llvm::cl::init(32));
static llvm::cl::opt<std::string>
    decodeOutput("decode-o",
                 llvm::cl::desc("Also build the split-key decode kernel and "
                                "its merge, and write their PTX here"),
                 llvm::cl::init(""));

static llvm::cl::opt<std::string>
    prologueOutput("prologue-o",
                   llvm::cl::desc("Write the PTX of the prologue kernels (the "
                                  "attn.einsum ops before the attention) here"),
                   llvm::cl::init(""));

static int fail(const Twine &message) {
  llvm::WithColor::error(llvm::errs(), "attn-gpu-gen") << message << "\n";
  return 1;
}

static int writeFile(StringRef path, StringRef text) {
  std::string error;
  std::unique_ptr<llvm::ToolOutputFile> file = openOutputFile(path, &error);
  if (!file)
    return fail(error);
  file->os() << text;
  file->keep();
  return 0;
}

namespace {

StringRef kindName(attn::GpuKernelParam::Kind kind) {
  switch (kind) {
  case attn::GpuKernelParam::Kind::Pointer:
    return "ptr";
  case attn::GpuKernelParam::Kind::I32:
    return "i32";
  case attn::GpuKernelParam::Kind::I64:
    return "i64";
  case attn::GpuKernelParam::Kind::F32:
    return "f32";
  case attn::GpuKernelParam::Kind::F64:
    return "f64";
  case attn::GpuKernelParam::Kind::TensorMap:
    return "tmap";
  }
  llvm_unreachable("unknown parameter kind");
}

/// A one-line JSON description of the kernel artifact (no PTX): the tile
/// shape, parameters and captures that kernel tests launch it by. Packages
/// describe their kernels with the runtime's manifest instead.
std::string describeKernel(const attn::GpuKernelArtifact &artifact) {
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::formatv(
      "{{\"kernel\": \"{0}\", \"chip\": \"{1}\", \"dtype\": \"{2}\", "
      "\"D\": {3}, \"E\": {4}, \"block\": [{5}, 1, 1], "
      "\"grid\": [\"ceil(M/{6})\", \"H\", \"B\"], \"block_m\": {6}, "
      "\"shared_bytes\": {7}, \"lse\": {8}, \"sink\": {9}, \"params\": [",
      artifact.kernelName, artifact.chip, artifact.elementType,
      artifact.headDim, artifact.valueDim, artifact.blockDim[0],
      artifact.blockM, artifact.dynamicSharedMemoryBytes,
      artifact.hasLse ? "true" : "false",
      artifact.hasSink ? "true" : "false");
  llvm::interleave(
      artifact.signature.params, os,
      [&](const attn::GpuKernelParam &param) {
        os << "[\"" << param.name << "\", \"" << kindName(param.kind)
           << "\"]";
      },
      ", ");
  os << "], \"captures\": [";
  llvm::interleave(
      artifact.signature.captures, os,
      [&](const attn::GpuCapture &capture) {
        os << llvm::formatv("{{\"source\": \"{0}\", \"tensor\": {1}, "
                            "\"type\": \"{2}\", \"rank\": {3}, "
                            "\"first_param\": {4}}",
                            capture.source,
                            capture.isTensor ? "true" : "false",
                            capture.elementType, capture.rank,
                            capture.firstParam);
      },
      ", ");
  os << "]";
  if (artifact.decode)
    os << llvm::formatv(", \"decode\": {{\"kernel\": \"{0}\", \"merge\": "
                        "\"{1}\", \"rows\": {2}, \"shared_bytes\": {3}, "
                        "\"merge_threads\": {4}}",
                        artifact.decode->kernelName,
                        artifact.decode->mergeKernelName, attn::kDecodeRows,
                        artifact.decode->sharedMemoryBytes, attn::kMergeThreads);
  if (artifact.tileList)
    os << llvm::formatv(", \"tile_list\": {{\"kernel\": \"{0}\", \"block_m\": "
                        "{1}, \"block_n\": {2}, \"per_head\": {3}}",
                        artifact.tileList->kernelName,
                        artifact.tileList->blockM, artifact.tileList->blockN,
                        artifact.tileList->perHead ? "true" : "false");
  if (artifact.prologue) {
    os << ", \"prologue\": [";
    llvm::interleave(
        artifact.prologue->kernels, os,
        [&](const attn::GpuPrologueKernel &kernel) {
          os << "{\"kernel\": \"" << kernel.name << "\", \"einsums\": [";
          llvm::interleaveComma(kernel.einsums, os);
          os << "], \"params\": " << kernel.signature.params.size() << "}";
        },
        ", ");
    os << "]";
  }
  os << "}";
  return text;
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  llvm::cl::ParseCommandLineOptions(argc, argv, "attn.attention to PTX\n");

  DialectRegistry registry;
  registry.insert<attn::AttnDialect, arith::ArithDialect, func::FuncDialect,
                  math::MathDialect, scf::SCFDialect, tensor::TensorDialect>();
  attn::registerGpuCodegenDialects(registry);
  MLIRContext context(registry);

  llvm::SourceMgr sourceMgr;
  std::string error;
  std::unique_ptr<llvm::MemoryBuffer> buffer = openInputFile(inputFile, &error);
  if (!buffer)
    return fail(error);
  sourceMgr.AddNewSourceBuffer(std::move(buffer), llvm::SMLoc());
  SourceMgrDiagnosticHandler diagnostics(sourceMgr, &context);
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sourceMgr, &context);
  if (!module)
    return 1;

  if (emitMlir) {
    attn::registerAttnGPUPasses();
    PassManager pm(&context);
    std::string pipeline =
        llvm::formatv("attn-nvgpu-pipeline{{chip={0} features={1} "
                      "block-m={2} block-n={3} warp-rows={4} decode={5}}",
                      chip.getValue(), features.getValue(), blockM.getValue(),
                      blockN.getValue(), warpRows.getValue(),
                      !decodeOutput.empty())
            .str();
    if (failed(parsePassPipeline(pipeline, pm)) || failed(pm.run(*module)))
      return 1;
    std::string text;
    llvm::raw_string_ostream os(text);
    module->print(os);
    return writeFile(outputFile, text);
  }

  attn::GpuOptions options;
  options.chip = chip;
  options.features = features;
  options.blockM = blockM;
  options.blockN = blockN;
  options.warpRows = warpRows;
  options.decode = !decodeOutput.empty();
  llvm::Expected<attn::GpuKernelArtifact> artifact =
      attn::compileAttentionForGpu(*module, options);
  if (!artifact)
    return fail(llvm::toString(artifact.takeError()));
  if (int rc = writeFile(outputFile, artifact->ptx))
    return rc;
  if (artifact->decode)
    if (int rc = writeFile(decodeOutput, artifact->decode->ptx))
      return rc;
  if (artifact->prologue && !prologueOutput.empty())
    if (int rc = writeFile(prologueOutput, artifact->prologue->ptx))
      return rc;
  if (!manifestFile.empty())
    return writeFile(manifestFile, describeKernel(*artifact) + "\n");
  return 0;
}
