#include "kubelet/images/tar.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>

#include "base/pki.h"
#include "base/process.h"
#include "support/temp_dir.h"

namespace skiff::kubelet::images {
namespace {

using std::chrono::seconds;

const std::string kLongDir = std::string(90, 'd') + "/" + std::string(40, 'e');
const std::string kLongName = kLongDir + "/" + std::string(80, 'f');

std::string sample_archive() {
  TarWriter tar(1234567);
  EXPECT_TRUE(tar.add_directory("etc", 0755).is_ok());
  EXPECT_TRUE(tar.add_file("etc/hello.txt", "hello, tar\n", 0640).is_ok());
  EXPECT_TRUE(tar.add_file("empty", "", 0600).is_ok());
  EXPECT_TRUE(tar.add_symlink("bin/sh", "/bin/busybox").is_ok());
  EXPECT_TRUE(tar.add_directory("tmp/", 01777).is_ok());
  EXPECT_TRUE(tar.add_file(kLongName, std::string(1000, 'x'), 0755).is_ok());
  return tar.finish();
}

TEST(TarWriterTest, ReadsBackWhatItWrote) {
  std::string archive = sample_archive();
  EXPECT_EQ(archive.size() % 512, 0U);
  auto entries = read_tar_bytes(archive);
  ASSERT_TRUE(entries.is_ok()) << entries.status().to_string();
  ASSERT_EQ(entries->size(), 6U);
  const auto& e = *entries;
  EXPECT_EQ(e[0].name, "etc/");
  EXPECT_EQ(e[0].type, TarEntryType::kDirectory);
  EXPECT_EQ(e[0].mode, 0755U);
  EXPECT_EQ(e[1].name, "etc/hello.txt");
  EXPECT_EQ(e[1].type, TarEntryType::kFile);
  EXPECT_EQ(e[1].content, "hello, tar\n");
  EXPECT_EQ(e[1].mode, 0640U);
  EXPECT_EQ(e[1].mtime, 1234567);
  EXPECT_EQ(e[1].uid, 0U);
  EXPECT_EQ(e[2].size, 0U);
  EXPECT_EQ(e[3].type, TarEntryType::kSymlink);
  EXPECT_EQ(e[3].link_target, "/bin/busybox");
  EXPECT_EQ(e[4].name, "tmp/");
  EXPECT_EQ(e[4].mode, 01777U);
  EXPECT_EQ(e[5].name, kLongName);
  EXPECT_EQ(e[5].content, std::string(1000, 'x'));
}

TEST(TarWriterTest, GnuTarListsAndExtractsIt) {
  testing::TempDir dir("skiff-tar");
  std::string path = dir.sub("a.tar");
  ASSERT_TRUE(pki::write_file_atomic(path, sample_archive(), 0644).is_ok());
  auto list = run_command({"tar", "-tvf", path}, seconds(30));
  ASSERT_TRUE(list.is_ok()) << list.status().to_string();
  ASSERT_TRUE(list->status.success()) << list->err;
  EXPECT_NE(list->out.find("drwxrwxrwt root/root"), std::string::npos) << list->out;
  EXPECT_NE(list->out.find("bin/sh -> /bin/busybox"), std::string::npos) << list->out;
  EXPECT_NE(list->out.find(kLongName), std::string::npos) << list->out;
  EXPECT_EQ(list->err, "");

  std::string out = dir.sub("x");
  mkdir(out.c_str(), 0755);
  auto extract = run_command({"tar", "-xpf", path, "-C", out}, seconds(30));
  ASSERT_TRUE(extract.is_ok());
  ASSERT_TRUE(extract->status.success()) << extract->err;
  EXPECT_EQ(*pki::read_file(out + "/etc/hello.txt"), "hello, tar\n");
  EXPECT_EQ(*pki::read_file(out + "/" + kLongName), std::string(1000, 'x'));
  char target[64] = {};
  ASSERT_GT(readlink((out + "/bin/sh").c_str(), target, sizeof(target) - 1), 0);
  EXPECT_STREQ(target, "/bin/busybox");
  struct stat st;
  ASSERT_EQ(stat((out + "/etc/hello.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640U);
  EXPECT_EQ(st.st_mtime, 1234567);
}

TEST(TarReaderTest, ReadsGnuTarArchivesWithLongNames) {
  testing::TempDir dir("skiff-tar");
  std::string src = dir.sub("src");
  std::string deep = src + "/" + std::string(120, 'a') + "/" + std::string(120, 'b');
  ASSERT_TRUE(run_command({"mkdir", "-p", deep}, seconds(10))->status.success());
  ASSERT_TRUE(pki::write_file_atomic(deep + "/file", "deep", 0644).is_ok());
  for (const char* format : {"gnu", "pax"}) {
    std::string path = dir.sub(std::string(format) + ".tar");
    auto made = run_command({"tar", "--format", format, "-cf", path, "-C", src, "."}, seconds(30));
    ASSERT_TRUE(made.is_ok() && made->status.success()) << format;
    std::ifstream in(path, std::ios::binary);
    std::string found;
    Status s = read_tar(
        in, [](const std::string& name) { return name.ends_with("/file"); },
        [&](TarEntry&& e) {
          if (e.name.ends_with("/file")) found = e.name + "=" + e.content;
          return true;
        });
    ASSERT_TRUE(s.is_ok()) << format << ": " << s.to_string();
    EXPECT_EQ(found, "./" + std::string(120, 'a') + "/" + std::string(120, 'b') + "/file=deep")
        << format;
  }
}

TEST(TarReaderTest, CorruptionAndTruncationAreDataLoss) {
  std::string archive = sample_archive();
  std::string corrupt = archive;
  corrupt[600] ^= 0x01;  // inside the second header (the first header is 512 bytes, no body)
  EXPECT_EQ(read_tar_bytes(corrupt).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(read_tar_bytes(archive.substr(0, 1000)).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(read_tar_bytes(archive.substr(0, archive.size() - 1024)).status().code(),
            StatusCode::kDataLoss);
}

TEST(TarWriterTest, RejectsBadNames) {
  TarWriter tar;
  EXPECT_EQ(tar.add_file("/abs", "", 0644).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(tar.add_file("", "", 0644).code(), StatusCode::kInvalidArgument);
  // No '/' where a 100-byte name split would need one.
  EXPECT_EQ(tar.add_file(std::string(101, 'n'), "", 0644).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(tar.add_symlink("l", std::string(101, 't')).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(tar.add_symlink("l", "").code(), StatusCode::kInvalidArgument);
}

TEST(TarWriterTest, SameInputSameBytes) {
  EXPECT_EQ(sample_archive(), sample_archive());
}

}  // namespace
}  // namespace skiff::kubelet::images
