from setuptools import find_packages, setup

setup(
    name="segnet-caffe",
    version="0.1.0",
    description="Caffe's SegNet toolkit (prototxt, caffemodel, solvers, pycaffe API) on PyTorch",
    packages=find_packages(include=["segnet_caffe", "segnet_caffe.*"]),
    package_data={"segnet_caffe.proto": ["caffe.proto"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.2",
        "numpy",
        "protobuf>=7.35.1,<8",
        "opencv-python-headless",
        "pillow",
        "matplotlib",
        "tqdm",
        "grandalf",
    ],
    extras_require={"test": ["pytest", "hypothesis", "grpcio-tools", "h5py"], "hdf5": ["h5py"]},
    entry_points={"console_scripts": ["segnet-caffe=segnet_caffe.cli:main"]},
)
