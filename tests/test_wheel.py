"""The package as a user gets it: a built wheel installed into a fresh venv, used outside the repository.

The venv borrows this interpreter's installed dependencies through a `.pth`
file (nothing is downloaded) and gets the wheel with `pip install --no-deps`.
A plain path in a `.pth` file does not run the `.pth` files it points at, so the
editable install of the checkout is not visible there: `import smallcoder` finds
the wheel's copy.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_package_under_smallcoder_is_listed_in_pyproject():
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "smallcoder").rglob("__init__.py")}
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`run(*args)`: a command in a fresh venv holding the built wheel, run from a folder outside the repo."""
    from importlib.metadata import version

    if int(version("setuptools").split(".")[0]) < 77:  # as pyproject.toml's build-system requires
        pytest.skip(f"setuptools {version('setuptools')} here; building the wheel needs >= 77")
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # build from a copy, so the checkout gets no build/ or egg-info
    source.mkdir()  # without the checkout's editable build of the extension: the wheel compiles its own
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("smallcoder", "recipes"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(wheels), str(source)], check=True, capture_output=True)
    (wheel,) = wheels.glob("smallcoder-*.whl")

    env = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    pathlib.Path(site, "borrowed-dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
                   check=True, capture_output=True)

    work = tmp / "elsewhere"
    work.mkdir()
    environ = {k: v for k, v in os.environ.items() if k not in ("SMALLCODER_RECIPES", "PYTHONPATH")}
    environ["PATH"] = f"{env / 'bin'}{os.pathsep}{environ.get('PATH', '')}"

    def run(*args):
        result = subprocess.run(args, cwd=work, env=environ, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
        return result.stdout

    run.work, run.site = work, site
    return run


@pytest.mark.slow
def test_the_installed_wheel_is_the_one_imported(installed):
    location = installed("python", "-c", "import smallcoder; print(smallcoder.__file__)")
    assert location.strip().startswith(installed.site), location


@pytest.mark.slow
def test_recipe_commands_work_from_the_installed_wheel(installed):
    listing = installed("smallcoder", "recipe", "list")
    assert [line.split()[0] for line in listing.splitlines()] == ["base", "code", "math", "sft"]
    assert "6.0B tokens   22,888 steps" in listing
    shown = installed("smallcoder", "recipe", "show", "sft")
    assert "steps:             22,888 = tokens // tokens per step" in shown
    assert os.path.join(installed.site, "smallcoder", "stage_recipes", "sft.yaml") in shown


@pytest.mark.slow
def test_data_inspect_works_from_the_installed_wheel(installed):
    output = installed("smallcoder", "data", "inspect", "sft", "--demo")
    assert output.count("── batch 0 row") == 2 and "⟦doc 1⟧«User: " in output


@pytest.mark.slow
def test_a_copied_stage_file_extends_the_installed_defaults(installed):
    packaged = pathlib.Path(installed.site, "smallcoder", "stage_recipes", "sft.yaml")
    text = packaged.read_text().replace("tokens: 6.0B", "tokens: 1.0B")
    (installed.work / "my_sft.yaml").write_text(text)
    shown = installed("smallcoder", "recipe", "show", "my_sft.yaml")
    assert "steps:             3,814 = tokens // tokens per step" in shown  # 1.0B // (256 x 1024)
    assert "preset: smallcoder_303m" in shown  # from the package's _defaults.yaml


@pytest.mark.slow
def test_the_installed_wheel_ships_mbpp(installed):
    count = installed("python", "-c", "from smallcoder.eval import mbpp; print(len(mbpp.load_tasks()))")
    assert count.strip() == "500"


@pytest.mark.slow
def test_the_installed_wheel_has_the_native_decoding_kernels(installed):
    import platform

    if platform.machine() != "x86_64" or not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("the optional extension is built on x86-64 with a C++ compiler only")
    out = installed("env", "KERAS_BACKEND=jax", "python", "-c",
                    "from smallcoder.models import decode_kernels as k; "
                    "print(k._extension_path()); print(k.unavailable_reason())").splitlines()
    assert out[0].startswith(os.path.join(installed.site, "smallcoder", "_decode_kernels")), out
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    if " avx2" in flags and " fma" in flags:
        assert out[1] == "None", out  # the kernels run: `smallcoder eval` and `generate` decode with them
