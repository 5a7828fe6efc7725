-- AlterTable
ALTER TABLE "Participation" ADD COLUMN     "trainedExamples" INTEGER;
