//===- LaunchMemoryTest.cpp - The memory a launch needs -------------------===//
//
// The estimate counts inputs, outputs, the reference's float64 tensors (and
// their adjoints in reverse mode), the adjoints and gradients of a gradient
// launch and an unfused kernel's intermediates from the cascade; counts that
// overflow 64 bits are refused before they wrap; a launch larger than what is
// available is refused with the tensors and their sizes; dims outside their
// range are refused with the range.
//
//===----------------------------------------------------------------------===//

#include "attn/Driver/LaunchMemory.h"
#include "DriverTestUtil.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"

#include <gtest/gtest.h>

using namespace attn;

namespace {

class LaunchMemoryTest : public ::testing::Test {
protected:
  LaunchMemoryTest() {
    test::loadCodegenDialects(context);
    module = test::parseSpec(context, test::kCausalSpec);
  }

  mlir::attn::KernelOp kernel() {
    return *module->getOps<mlir::attn::KernelOp>().begin();
  }

  LaunchMemory estimate(std::vector<int64_t> dims,
                        const LaunchAllocations &allocations) {
    llvm::Expected<LaunchMemory> memory =
        LaunchMemory::estimate(kernel(), dims, allocations);
    if (!memory) {
      ADD_FAILURE() << llvm::toString(memory.takeError());
      return {};
    }
    return std::move(*memory);
  }

  static uint64_t bytesOf(const LaunchMemory &memory, llvm::StringRef label) {
    for (const MemoryItem &item : memory.getItems())
      if (item.label == label)
        return item.bytes;
    return 0;
  }

  mlir::MLIRContext context;
  mlir::OwningOpRef<mlir::ModuleOp> module;
};

TEST_F(LaunchMemoryTest, CountsInputsAndOutputsInTheirTypes) {
  ASSERT_TRUE(module);
  LaunchAllocations allocations;
  allocations.inputCopies = 1;
  allocations.outputs = true;
  // B=2, H=3, M=5, N=7, D=4: Q 120 bf16, K and V 168 bf16 each, O 120 f32.
  LaunchMemory memory = estimate({2, 3, 5, 7, 4}, allocations);
  EXPECT_EQ(bytesOf(memory, "Q"), 240u);
  EXPECT_EQ(bytesOf(memory, "K"), 336u);
  EXPECT_EQ(bytesOf(memory, "V"), 336u);
  EXPECT_EQ(bytesOf(memory, "O"), 480u);
  EXPECT_EQ(memory.getTotalBytes(), 240u + 336 + 336 + 480);
  // Two copies of the inputs count twice, under one label each.
  allocations.inputCopies = 2;
  allocations.outputs = false;
  memory = estimate({2, 3, 5, 7, 4}, allocations);
  EXPECT_EQ(bytesOf(memory, "Q"), 480u);
  EXPECT_EQ(memory.getItems().size(), 3u);
}

TEST_F(LaunchMemoryTest, TheReferenceHoldsEveryCascadeTensorInFloat64) {
  ASSERT_TRUE(module);
  LaunchAllocations allocations;
  allocations.reference = true;
  LaunchMemory memory = estimate({1, 2, 10, 20, 8}, allocations);
  // [B, H, M, N] has 400 entries, and four tensors of the cascade have that
  // shape: the sum (8 bytes an entry), the scaled scores (9: an elementwise
  // einsum has presence bytes), the kept scores and P (9: entries may be
  // absent).
  EXPECT_EQ(bytesOf(memory, "the reference's [B, H, M, N] tensors"),
            400u * (8 + 9 + 9 + 9));
  // O is computed (8 bytes an entry) and returned as float64 (8 more).
  EXPECT_EQ(bytesOf(memory, "the reference's [B, H, M, D] tensors"), 160u * 8);
  EXPECT_EQ(bytesOf(memory, "the reference's O"), 160u * 8);
  EXPECT_EQ(bytesOf(memory, "the reference's Q"), 160u * 8);
}

TEST_F(LaunchMemoryTest, TheUnfusedKernelHoldsIntermediatesOnly) {
  ASSERT_TRUE(module);
  LaunchAllocations allocations;
  allocations.unfusedWorkspaces = true;
  LaunchMemory memory = estimate({1, 2, 10, 20, 8}, allocations);
  // f32 values, plus an i1 presence tensor once entries may be absent.
  EXPECT_EQ(bytesOf(memory, "the unfused kernel's [B, H, M, N] tensors"),
            400u * (4 + 4 + 5 + 5));
  // The output is the caller's.
  EXPECT_EQ(bytesOf(memory, "the unfused kernel's [B, H, M, D] tensors"), 0u);
  EXPECT_EQ(memory.getTotalBytes(), 400u * 18);
}

TEST_F(LaunchMemoryTest, GradientLaunchesCountAdjointsAndTheReverseMode) {
  ASSERT_TRUE(module);
  LaunchAllocations allocations;
  allocations.outputAdjoints = true;
  allocations.gradients = true;
  // B=1, H=2, M=10, N=20, D=8: dO of O's 160 entries, dQ of Q's 160 and dK,
  // dV of 320 each, all f32 whatever the forward's types.
  LaunchMemory memory = estimate({1, 2, 10, 20, 8}, allocations);
  EXPECT_EQ(bytesOf(memory, "dO"), 160u * 4);
  EXPECT_EQ(bytesOf(memory, "dQ"), 160u * 4);
  EXPECT_EQ(bytesOf(memory, "dK"), 320u * 4);
  EXPECT_EQ(bytesOf(memory, "dV"), 320u * 4);
  EXPECT_EQ(memory.getTotalBytes(), (160u + 160 + 320 + 320) * 4);

  // Reverse mode: the reference's forward tensors as `reference` counts
  // them, a float64 adjoint of each float tensor it computes, and of each
  // float input an adjoint, the sum of squares of its terms, and the
  // gradient and scale returned, 8 bytes each.
  LaunchAllocations reverse;
  reverse.referenceGradients = true;
  memory = estimate({1, 2, 10, 20, 8}, reverse);
  EXPECT_EQ(bytesOf(memory, "the reference's [B, H, M, N] tensors"),
            400u * (8 + 9 + 9 + 9));
  EXPECT_EQ(bytesOf(memory, "the reference's [B, H, M, N] adjoints"),
            400u * 4 * 8);
  EXPECT_EQ(bytesOf(memory, "the reference's [B, H, M, D] adjoints"), 160u * 8);
  EXPECT_EQ(bytesOf(memory, "the reference's dQ"), 160u * 32);
  EXPECT_EQ(bytesOf(memory, "the reference's dK"), 320u * 32);
}

TEST_F(LaunchMemoryTest, ElementCountsThatOverflowAreRefused) {
  ASSERT_TRUE(module);
  LaunchAllocations allocations;
  allocations.inputCopies = 1;
  allocations.outputs = true;
  // Q has 2^62 * 4 elements: more than an int64 counts.
  llvm::Expected<LaunchMemory> memory = LaunchMemory::estimate(
      kernel(), {int64_t(1) << 31, int64_t(1) << 31, 1, 1, 4}, allocations);
  ASSERT_FALSE(memory);
  EXPECT_EQ(llvm::toString(memory.takeError()),
            "this launch is too large: Q has 2147483648 x 2147483648 x 1 x 4 "
            "elements, more than a 64-bit count holds");
  // M = N = 3037000500: M * N overflows an int64, which only the score
  // tensors of the reference have.
  allocations.reference = true;
  memory = LaunchMemory::estimate(kernel(), {1, 1, 3037000500, 3037000500, 1},
                                  allocations);
  ASSERT_FALSE(memory);
  EXPECT_EQ(llvm::toString(memory.takeError()),
            "this launch is too large: a [B, H, M, N] tensor of the "
            "reference has 1 x 1 x 3037000500 x 3037000500 elements, more "
            "than a 64-bit count holds");
}

TEST_F(LaunchMemoryTest, ByteCountsThatOverflowAreRefused) {
  ASSERT_TRUE(module);
  LaunchAllocations allocations;
  allocations.inputCopies = 1;
  // Q has 2^62 elements (fits) of 2 bytes: 2^63 bytes fit an unsigned
  // count, but K and V after it do not.
  llvm::Expected<LaunchMemory> memory = LaunchMemory::estimate(
      kernel(), {int64_t(1) << 31, int64_t(1) << 31, 1, 1, 1}, allocations);
  ASSERT_FALSE(memory);
  EXPECT_EQ(llvm::toString(memory.takeError()),
            "this launch is too large: the bytes it allocates do not fit in "
            "a 64-bit count");
}

TEST_F(LaunchMemoryTest, ZeroSizesAllocateNothingWhateverTheOtherSizes) {
  ASSERT_TRUE(module);
  LaunchAllocations allocations;
  allocations.inputCopies = 1;
  allocations.outputs = true;
  allocations.reference = true;
  LaunchMemory memory = estimate(
      {0, kMaxDimSize, kMaxDimSize, kMaxDimSize, kMaxDimSize}, allocations);
  EXPECT_EQ(memory.getTotalBytes(), 0u);
}

TEST_F(LaunchMemoryTest, DimsOutsideTheirRangeAreRefusedWithTheRange) {
  ASSERT_TRUE(module);
  llvm::Expected<LaunchMemory> memory = LaunchMemory::estimate(
      kernel(), {kMaxDimSize + 1, 1, 1, 1, 1}, LaunchAllocations{});
  ASSERT_FALSE(memory);
  EXPECT_EQ(llvm::toString(memory.takeError()),
            "size of 'B' is 4294967297, outside the range of a dim [0, "
            "4294967296]");
  memory =
      LaunchMemory::estimate(kernel(), {1, -1, 1, 1, 1}, LaunchAllocations{});
  ASSERT_FALSE(memory);
  EXPECT_EQ(llvm::toString(memory.takeError()),
            "size of 'H' is -1, outside the range of a dim [0, 4294967296]");
}

TEST_F(LaunchMemoryTest, ALaunchLargerThanAvailableNamesItsTensors) {
  ASSERT_TRUE(module);
  LaunchAllocations allocations;
  allocations.inputCopies = 1;
  allocations.outputs = true;
  allocations.reference = true;
  // B=1, H=1, M=N=1024, D=4096: Q, K, V 8 MiB each, O 16 MiB; the reference
  // holds four [M, N] tensors (S three times, P) and float64 copies of
  // everything.
  std::vector<int64_t> dims = {1, 1, 1024, 1024, 4096};
  llvm::Error error =
      checkLaunchMemory(kernel(), dims, allocations, uint64_t(100) << 20);
  ASSERT_TRUE(!!error);
  std::string message;
  llvm::handleAllErrors(std::move(error), [&](const llvm::StringError &e) {
    EXPECT_EQ(e.convertToErrorCode(),
              std::make_error_code(std::errc::not_enough_memory));
    message = e.getMessage();
  });
  EXPECT_EQ(message,
            "this launch needs 235 MiB (Q 8 MiB, K 8 MiB, V 8 MiB, O 16 MiB, "
            "the reference's Q 32 MiB, the reference's K 32 MiB, the "
            "reference's V 32 MiB, the reference's [B, H, M, N] tensors 35 "
            "MiB, the reference's [B, H, M, D] tensors 32 MiB, the "
            "reference's O 32 MiB) but 100 MiB is available");
  // Enough memory, or none known, lets it through.
  EXPECT_FALSE(llvm::errorToBool(
      checkLaunchMemory(kernel(), dims, allocations, uint64_t(1) << 30)));
  EXPECT_FALSE(llvm::errorToBool(
      checkLaunchMemory(kernel(), dims, allocations, std::nullopt)));
}

TEST(LaunchMemoryFormat, BytesReadLikeAPerson) {
  EXPECT_EQ(formatBytes(0), "0 B");
  EXPECT_EQ(formatBytes(1023), "1023 B");
  EXPECT_EQ(formatBytes(1536), "1.5 KiB");
  EXPECT_EQ(formatBytes(uint64_t(16) << 30), "16 GiB");
  EXPECT_EQ(formatBytes(uint64_t(80007) << 20), "78.1 GiB");
}

TEST(LaunchMemoryAvailable, TheMachineSaysHowMuchIsAvailable) {
  std::optional<uint64_t> available = getAvailableMemory();
  ASSERT_TRUE(available.has_value());
  EXPECT_GT(*available, 0u);
}

} // namespace
