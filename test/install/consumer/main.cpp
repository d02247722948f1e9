// Loads the package the build compiled and prints what it holds; asks the
// runtime how many GPUs it sees (0 without a driver, never a crash).
#include <attnc/attnc.h>

#include <cstdio>

int main() {
  attnc_package package = nullptr;
  if (attnc_package_load(PACKAGE_PATH, &package) != ATTNC_OK) {
    std::printf("consumer: %s\n", attnc_last_error());
    return 1;
  }
  std::printf("consumer: kernel %s, target %s, %zu args, %zu entries\n",
              attnc_package_name(package), attnc_package_target(package),
              attnc_package_num_args(package),
              attnc_package_num_entries(package));
  for (size_t i = 0; i < attnc_package_num_entries(package); ++i)
    std::printf("consumer: entry %s\n", attnc_package_entry_name(package, i));
  std::printf("consumer: %d GPUs\n", attnc_device_count());
  attnc_package_free(package);
  return 0;
}
