# skiff front door. Every target installs the Debian packages it needs first.
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
DATA_DIR ?= /var/lib/skiff

.PHONY: all deps build test run bench bench-store bench-apiserver bench-scheduler bench-cluster bench-pods bench-proxy bench-dns format clean

all: build

deps:
	@scripts/install-deps.sh build

$(BUILD_DIR)/build.ninja:
	@scripts/install-deps.sh build
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: $(BUILD_DIR)/build.ninja
	@scripts/install-deps.sh build
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: $(BUILD_DIR)/build.ninja
	@scripts/install-deps.sh test
	cmake --build $(BUILD_DIR) -j $(JOBS)
	cd $(BUILD_DIR) && ctest --output-on-failure --timeout 900 -j 1

run: build
	@scripts/install-deps.sh run
	$(BUILD_DIR)/skiff server --data-dir $(DATA_DIR)

bench: bench-store bench-apiserver bench-scheduler bench-cluster bench-pods bench-proxy bench-dns

bench-store: build
	@scripts/install-deps.sh test
	$(BUILD_DIR)/bench/store_bench

bench-apiserver: build
	@scripts/install-deps.sh test
	$(BUILD_DIR)/bench/apiserver_bench --skiff $(BUILD_DIR)/skiff

bench-scheduler: build
	$(BUILD_DIR)/bench/scheduler_bench

bench-cluster: build
	$(BUILD_DIR)/bench/cluster_bench --skiff $(BUILD_DIR)/skiff

bench-pods: build
	@scripts/install-deps.sh test
	bench/pod_startup_bench.py --skiff $(BUILD_DIR)/skiff

bench-proxy: build
	@scripts/install-deps.sh run
	$(BUILD_DIR)/bench/proxy_bench

bench-dns: build
	$(BUILD_DIR)/bench/dns_bench

format:
	find cmd src tests bench -name '*.h' -o -name '*.cc' | xargs clang-format -i

clean:
	rm -rf $(BUILD_DIR)
